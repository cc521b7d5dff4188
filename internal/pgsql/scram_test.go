package pgsql

import (
	"encoding/base64"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// verifierRE is PostgreSQL's form of a SCRAM-SHA-256 verifier.
var verifierRE = regexp.MustCompile(`SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=`)

// scramAccepts runs a whole SCRAM-SHA-256 exchange (RFC 5802) of a client
// knowing pw against a server holding verifier: what PostgreSQL does when
// the role logs in with a password.
func scramAccepts(t *testing.T, verifier, pw string) bool {
	t.Helper()
	head, keys, ok := strings.Cut(strings.TrimPrefix(verifier, "SCRAM-SHA-256$"), "$")
	iterS, saltB64, ok2 := strings.Cut(head, ":")
	storedB64, serverB64, ok3 := strings.Cut(keys, ":")
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") || !ok || !ok2 || !ok3 {
		t.Fatalf("not a SCRAM verifier: %.20s…", verifier)
	}
	iters, _ := strconv.Atoi(iterS)
	dec := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	creds := scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(dec(saltB64)), Iters: iters}, StoredKey: dec(storedB64), ServerKey: dec(serverB64)}
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		t.Fatal(err)
	}
	cl, err := scram.SHA256.NewClient("role", pw, "")
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := srv.NewConversation(), cl.NewConversation()
	msg := ""
	for !sc.Done() {
		if msg, err = cc.Step(msg); err != nil {
			return false
		}
		if msg, err = sc.Step(msg); err != nil {
			return false
		}
	}
	_, err = cc.Step(msg) // the client checks the server's signature
	return err == nil && sc.Valid()
}

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
			v, err := SCRAMVerifier(tc.pw)
			if err != nil {
				t.Fatal(err)
			}
			if !verifierRE.MatchString(v) || verifierRE.FindString(v) != v {
				t.Fatalf("not PostgreSQL's verifier form: %q", v)
			}
			if strings.Contains(v, tc.pw) {
				t.Fatal("the verifier holds the password")
			}
			if got := scramAccepts(t, v, tc.try); got != tc.accepts {
				t.Fatalf("SCRAM exchange with %q accepted = %v, want %v", tc.try, got, tc.accepts)
			}
		})
	}
	a, _ := SCRAMVerifier("mfyp_same")
	b, _ := SCRAMVerifier("mfyp_same")
	if a == b {
		t.Fatal("two verifiers of one password are equal: the salt is not random")
	}
}
