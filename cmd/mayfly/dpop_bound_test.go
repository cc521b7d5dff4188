package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// --dpop-key asks for a token bound to that key. A server (or a proxy in
// front of it that drops the DPoP header) that answers with a bearer
// token has not bound it: such a token, usable by whoever copies it, is not
// handed out as if it were bound (printed, put in CMD's environment); it is
// revoked, and the command fails saying why.
func TestExchangeRefusesAnUnboundTokenForADPoPKey(t *testing.T) {
	fs := newFakeServer(t) // answers token_type "Bearer" whatever the request
	jobEnv(t, fs.URL)
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"login", []string{"login", "--grant", "deploy"}, exitUsage},
		{"exec", []string{"exec", "--grant", "deploy"}, exitExecFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args, "--dpop-key", filepath.Join(t.TempDir(), "k.pem"))
			if tc.name == "exec" {
				args = append(args, "--", "echo", "CMD ran")
			}
			stdout, stderr, code := runCLI(t, "", args...)
			tok, revoked := fs.last()
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, stdout, stderr)
			}
			if strings.Contains(stdout, tok) || strings.Contains(stdout, "CMD ran") {
				t.Errorf("the unbound token was handed out: %q", stdout)
			}
			if len(revoked) == 0 || revoked[len(revoked)-1] != tok {
				t.Errorf("the unbound token was not revoked")
			}
			if !strings.Contains(stderr, "bearer token") || strings.Contains(stderr, tok) {
				t.Errorf("stderr does not say why (or holds the token): %q", stderr)
			}
		})
	}
	// Without --dpop-key a bearer token is what was asked for.
	if stdout, stderr, code := runCLI(t, "", "login", "--grant", "deploy"); code != 0 || stdout == "" {
		t.Fatalf("bearer login: exit %d, %q", code, stderr)
	}
}
