package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// What the commands print of a server's answers reaches a terminal or a CI
// log as plain text of one line: a control character in it (an escape
// sequence that retitles the window, writes the clipboard or hides what
// follows; a line break that starts a line the CI runner reads as a
// workflow command) is not written out as it came, and a leak report's
// "hint" never shows a whole token, even if a server sends one.
func TestCommandsPrintServerTextAsOneLine(t *testing.T) {
	// … and a bidi override, which reorders the rest of the line
	// ("lse_1<RLO>cba" reads "lse_1abc") in a terminal that honours it.
	const evil = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\r\n::add-mask::x\u009b31m\u202e"
	leaked, _ := token.New(token.Job)
	now := time.Now().UTC()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		var v any
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/token":
			if r.PostForm.Get("scope") == "forbidden" {
				w.WriteHeader(http.StatusBadRequest)
				v = map[string]string{"error": "invalid_scope", "error_description": "not for you"}
				break
			}
			tok, _ := token.New(token.Job)
			v = apitype.TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: 600, LeaseID: "lse_1" + evil,
				IssuedTokenType: "urn:ietf:params:oauth:token-type:access_token"}
		case "POST /v1/revoke":
			// A refusal is not tried again: exec says at once that the
			// token stays live, naming its lease.
			w.WriteHeader(http.StatusBadRequest)
			v = map[string]string{"error": "invalid_request", "error_description": "no"}
		case "POST /v1/leaks":
			v = apitype.LeakResponse{Revoked: []apitype.RevokedLease{{LeaseID: "lse_2" + evil, Hint: leaked + evil}},
				RevokedAdmin:    []apitype.RevokedAdminToken{{Hint: "mfya_abcd" + evil}},
				RevokedSessions: []apitype.RevokedSession{{ID: "ses_3" + evil}}}
		case "GET /v1/leases":
			v = apitype.LeaseList{Leases: []apitype.Lease{{LeaseID: "lse_4", Grants: []string{"g"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}},
				NextCursor: "next" + evil}
		case "POST /v1/admin/tokens":
			adm, _ := token.New(token.Admin)
			v = apitype.AdminTokenCreated{Name: "bob", Role: "admin" + evil, Token: adm, ExpiresAt: now.Add(time.Hour)}
		case "GET /v1/secrets/s":
			v = apitype.SecretMeta{Name: "s" + evil, Version: 1, CreatedAt: now, Rotation: &apitype.SecretRotation{
				SecretRotate: apitype.SecretRotate{Every: "24h" + evil, Grace: "5m" + evil, Via: apitype.RotateVia{Command: "rot" + evil}},
				NextAt:       now, LastError: "failed" + evil, LastErrorAt: &now}}
		case "POST /v1/policy/plan":
			v = apitype.PolicyPlanResponse{Changes: []string{"+ grant g" + evil}, Revokes: []apitype.PolicyRevocation{{Grant: "old" + evil, Leases: 1}}}
		case "PUT /v1/policy":
			v = apitype.PolicyApplyResponse{Version: 2, Hash: "\x1b[8m" + evil, Changes: []string{"+ grant g" + evil}, Revoked: 1}
		default:
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(`issuers:
  dev:
    url: http://127.0.0.1:9300
    audience: http://127.0.0.1:9302
upstreams:
  up:
    url: http://127.0.0.1:9301
    credential:
      secret: s
      header: Authorization
grants:
  g:
    upstream: up
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/**"]
    who:
      - issuer: dev
        claims:
          repository_id: "123"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	admin, _ := token.New(token.Admin)
	c1Claims := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x","head_ref":"x\u009b2J\u0085y"}`)) + ".c2ln"
	t.Setenv("MAYFLY_SESSION_FILE", filepath.Join(dir, "sessions.json"))

	for _, tc := range []struct {
		name  string
		job   bool // a job's environment (exchange), not an admin's
		env   map[string]string
		stdin string
		args  []string
		code  int
		want  string // printed, so the answer was read
	}{
		{name: "exec: the lease of a token left live", job: true, args: []string{"exec", "--grant", "g", "--", "true"}, want: "lease lse_1"},
		// $GITHUB_ENV cannot be written: login revokes the token it
		// could not hand over.
		{name: "login: the lease of a token left live", job: true, env: map[string]string{"GITHUB_ENV": dir},
			args: []string{"login", "--grant", "g", "--format", "github-env"}, code: exitUsage, want: "lease lse_1"},
		// A refusal shows the ID token's claims: a branch name (head_ref)
		// is the pusher's choice, and git allows C1 controls in it.
		{name: "login: a refused ID token's claims", job: true, env: map[string]string{"MAYFLY_ID_TOKEN": c1Claims},
			args: []string{"login", "--grant", "forbidden"}, code: exitNegative, want: "head_ref: x"},
		{name: "scan --revoke", stdin: "MAYFLY_TOKEN=" + leaked + "\n", args: []string{"scan", "--stdin", "--revoke"}, code: exitNegative, want: "revoked lse_2"},
		{name: "leases list: the cursor", args: []string{"leases", "list", "--limit", "1"}, want: "--cursor next"},
		{name: "admin token create", args: []string{"admin", "token", "create", "bob", "--role", "admin"}, want: "(role admin"},
		{name: "secret show", args: []string{"secret", "show", "s"}, want: "last_error:  failed"},
		{name: "policy plan", args: []string{"policy", "plan", pol}, want: "will revoke 1 live token(s) of grant old"},
		{name: "policy apply", args: []string{"policy", "apply", "--yes", pol}, want: "applied policy version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.job {
				jobEnv(t, srv.URL)
			} else {
				t.Setenv("MAYFLY_ADDR", srv.URL)
				t.Setenv("MAYFLY_CACERT", "")
				t.Setenv("MAYFLY_TOKEN", admin)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			stdout, stderr, code := runCLI(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %q %q", code, tc.code, stdout, stderr)
			}
			all := stdout + stderr
			if !strings.Contains(all, tc.want) {
				t.Errorf("%q not printed: %q %q", tc.want, stdout, stderr)
			}
			if strings.ContainsAny(all, "\x1b\x07\r\u009b\u0085\u202e") || strings.Contains(all, "\n::add-mask::x") {
				t.Errorf("wrote control characters or a line of the server's making: %q %q", stdout, stderr)
			}
			if strings.Contains(all, leaked) {
				t.Errorf("printed the whole leaked token: %q %q", stdout, stderr)
			}
		})
	}
}
