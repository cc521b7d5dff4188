package pgsql_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
)

// verifierRE is PostgreSQL's form of a SCRAM-SHA-256 verifier.
var verifierRE = regexp.MustCompile(`SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=`)

func TestSCRAMVerifier(t *testing.T) {
	for _, tc := range []struct {
		name, pw, try string
		accepts       bool
	}{
		{"its password", "mfyp_pw-one", "mfyp_pw-one", true},
		{"another password", "mfyp_pw-one", "mfyp_pw-two", false},
		{"a prefix of it", "mfyp_pw-one", "mfyp_pw", false},
		{"rotation's base32", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := pgsql.SCRAMVerifier(tc.pw)
			if err != nil {
				t.Fatal(err)
			}
			if !verifierRE.MatchString(v) || verifierRE.FindString(v) != v {
				t.Fatalf("not PostgreSQL's verifier form: %q", v)
			}
			if strings.Contains(v, tc.pw) {
				t.Fatal("the verifier holds the password")
			}
			if got := pgroletest.SCRAMAccepts(t, v, tc.try); got != tc.accepts {
				t.Fatalf("SCRAM exchange with %q accepted = %v, want %v", tc.try, got, tc.accepts)
			}
		})
	}
	a, _ := pgsql.SCRAMVerifier("mfyp_same")
	b, _ := pgsql.SCRAMVerifier("mfyp_same")
	if a == b {
		t.Fatal("two verifiers of one password are equal: the salt is not random")
	}
}
