package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// docs/ci-generic-oidc.md shares a token between commands by sourcing
// `mayfly login --format env` ("sourcing the file cannot run anything
// else"), and docs/dynamic-credentials.md says that output carries
// DATABASE_URL for migration tools. A minted role's DSN (pgrole.Credential.DSN,
// as the server builds it) has "?sslmode=…&sslrootcert=system": unquoted, the
// "&" sends the DATABASE_URL assignment to a background subshell, so the
// sourcing shell never gets DATABASE_URL (and gets a stray sslrootcert).
func TestLoginEnvFormatSourcesDSN(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	pw, _ := token.NewPassword()
	for _, tc := range []struct {
		name string
		cred pgrole.Credential
	}{
		{"tcp, sslmode verify-full", pgrole.Credential{Name: "mayfly_0123456789abcdef01234567_9c41d07e", Password: pw, Host: "db.internal", Port: 5432, Database: "app", SSLMode: "verify-full", SSLRootCert: "system"}},
		{"unix socket", pgrole.Credential{Name: "mayfly_0123456789abcdef01234567_9c41d07e", Password: pw, Host: "/run/postgresql", Port: 5432, Database: "app", SSLRootCert: "system"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := tc.cred.DSN()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tok, _ := token.New(token.Job)
				_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 600,
					"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "migrate", "lease_id": "lse_test",
					"upstream_credentials": map[string]any{"app-db": map[string]string{"dsn": dsn, "username": tc.cred.Name,
						"password": pw, "expires_at": "2030-01-01T00:00:00Z"}}})
			}))
			defer srv.Close()
			jobEnv(t, srv.URL)
			out, errOut, code := runCLI(t, "", "login", "--grant", "migrate", "--format", "env")
			if code != 0 {
				t.Fatalf("login: exit %d %s", code, errOut)
			}
			if !strings.Contains(out, "\nDATABASE_URL=") {
				t.Fatalf("env output has no DATABASE_URL line: %q", out)
			}
			f := filepath.Join(t.TempDir(), "mayfly.env")
			if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			// As the docs do: . "$TMPDIR/mayfly.env"
			got, err := exec.Command(sh, "-c", `. "$1"; printf '%s|%s' "$DATABASE_URL" "${sslrootcert-unset}"`, "sh", f).Output()
			if err != nil {
				t.Fatal(err)
			}
			if want := dsn + "|unset"; string(got) != want {
				t.Errorf("after sourcing the env output: DATABASE_URL|sslrootcert = %q, want %q", got, want)
			}
		})
	}
}
