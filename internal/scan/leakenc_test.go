package scan

import (
	"encoding/base64"
	"encoding/hex"
	"slices"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// POST /v1/leaks takes any text and revokes every mayfly token in it; a
// log in which the token appears only encoded (curl -v -u x:$MAYFLY_TOKEN
// through the gateway, whose Basic header GitHub's runner masker does not
// mask; a Docker config's "auth"; a hex dump) must be revoked as `mayfly
// scan --stdin --revoke` of that very log revokes it. Minted passwords
// are revocable too.
func TestLeakReportEncodedTokens(t *testing.T) {
	s := newScanner(t, Options{})
	tok := jobToken(t)
	pw, err := token.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, body, want string }{
		{"curl -v Basic header", "> GET /gw/github/repos/o/r HTTP/1.1\n> Authorization: Basic " +
			base64.StdEncoding.EncodeToString([]byte("x:"+tok)) + "\n> User-Agent: curl/8.5.0\n", tok},
		{"docker config.json", `{"auths":{"gw.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("ci:"+tok)) + `"}}}`, tok},
		{"hex dump", "token bytes: " + hex.EncodeToString([]byte(tok)) + "\n", tok},
		{"every byte percent-encoded", "GET /cb?t=" + pctAll("x:"+tok) + " 200\n", tok},
		{"minted password in a base64 DSN", "DATABASE_URL_B64=" + base64.StdEncoding.EncodeToString([]byte("postgres://r:"+pw+"@db/app")) + "\n", pw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var scanned []string
			for _, f := range s.ScanBytes("ci.log", []byte(tt.body)) {
				scanned = append(scanned, f.Secret)
			}
			if !slices.Contains(scanned, tt.want) {
				t.Fatalf("precondition: mayfly scan does not find it either")
			}
			rep := ParseLeakReport([]byte(tt.body))
			if !slices.Contains(rep.Tokens, tt.want) && !slices.Contains(rep.Passwords, tt.want) {
				t.Fatalf("mayfly scan finds the live secret in this log, POST /v1/leaks of the same log revokes nothing (tokens %d, passwords %d)",
					len(rep.Tokens), len(rep.Passwords))
			}
		})
	}
}
