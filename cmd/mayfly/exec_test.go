package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/server"
)

// exec keeps the token alive while CMD runs, a key-bound one (--dpop-key)
// as well as a bearer one: the renewal of a key-bound token needs a DPoP
// proof of its key.
func TestExecRenewsToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and waits for a renewal")
	}
	// A 3s token is renewed after about 2s, while CMD still runs.
	old := renewMinLeft
	renewMinLeft = 0
	t.Cleanup(func() { renewMinLeft = old })

	iss := devissuertest.Start(t)
	ls := startServer(t, server.Config{}, nil)
	ls.env(t, ls.admin)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(`issuers:
  dev:
    url: `+iss.URL()+`
    audience: `+ls.addr+`
upstreams:
  api:
    url: http://127.0.0.1:9
    credential:
      secret: api-token
grants:
  deploy:
    upstream: api
    ttl: 5m
    allow:
      - methods: [GET]
        paths: ["/**"]
    who:
      - issuer: dev
        claims:
          repository: acme/app
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, code := runCLI(t, "upstream-credential-value\n", "secret", "put", "api-token"); code != 0 {
		t.Fatalf("secret put: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "policy", "apply", pol); code != 0 {
		t.Fatalf("policy apply: %d %s", code, e)
	}
	for _, k := range []string{"MAYFLY_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "MAYFLY_AUDIENCE", "GITHUB_ENV"} {
		t.Setenv(k, "")
	}
	tests := []struct {
		name string
		dpop bool
	}{
		{"bearer", false},
		{"dpop-bound", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idt, err := iss.Mint(nil, ls.addr, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv("MAYFLY_ID_TOKEN", idt)
			args := []string{"exec", "--grant", "deploy", "--ttl", "3s"}
			if tc.dpop {
				args = append(args, "--dpop-key", filepath.Join(t.TempDir(), "k.pem"))
			}
			args = append(args, "--", "sh", "-c", "sleep 2.5")
			_, stderr, code := runCLI(t, "", args...)
			if code != 0 || strings.Contains(stderr, "renewing the job token failed") {
				t.Fatalf("exit %d; the token was not renewed while CMD ran: %s", code, stderr)
			}
		})
	}
}
