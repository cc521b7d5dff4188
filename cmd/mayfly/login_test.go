package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// runCLI runs the mayfly command line in-process and returns what it wrote
// and its exit code (as main would compute it).
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	code = execute(context.Background(), root, &errb)
	return out.String(), errb.String(), code
}

const fakeJWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"

// fakeServer imitates the job-facing endpoints: it issues one fresh job
// token per exchange and records exchanges and revocations.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	issued   []string
	revoked  []string
	forms    []map[string][]string
	refusals map[string]string // scope → error code
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	fs := &fakeServer{refusals: map[string]string{"forbidden": "invalid_scope"}}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		fs.mu.Lock()
		defer fs.mu.Unlock()
		switch r.URL.Path {
		case "/v1/token":
			fs.forms = append(fs.forms, r.PostForm)
			if code, ok := fs.refusals[r.PostForm.Get("scope")]; ok {
				w.WriteHeader(400)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": "not for you"})
				return
			}
			tok, _ := token.New(token.Job)
			fs.issued = append(fs.issued, tok)
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 600,
				"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": r.PostForm.Get("scope"), "lease_id": "lse_test"})
		case "/v1/revoke":
			fs.revoked = append(fs.revoked, r.PostForm.Get("token"))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fakeServer) last() (issued string, revoked []string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.issued) > 0 {
		issued = fs.issued[len(fs.issued)-1]
	}
	return issued, append([]string(nil), fs.revoked...)
}

// jobEnv clears the CI variables of the environment the tests run in.
func jobEnv(t *testing.T, addr string) {
	for _, k := range []string{"ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "MAYFLY_AUDIENCE", "GITHUB_ENV", "MAYFLY_CACERT", "MAYFLY_TOKEN"} {
		t.Setenv(k, "")
	}
	t.Setenv("MAYFLY_ADDR", addr)
	t.Setenv("MAYFLY_ID_TOKEN", fakeJWT)
}

func TestLoginFormatsAndFlags(t *testing.T) {
	fs := newFakeServer(t)
	jobEnv(t, fs.URL)
	ghEnv := filepath.Join(t.TempDir(), "github_env")

	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		code     int
		check    func(t *testing.T, out, tok string)
		errMatch string
	}{
		{name: "token", args: []string{"login", "--grant", "deploy"}, check: func(t *testing.T, out, tok string) {
			if out != tok+"\n" {
				t.Errorf("out %q", out)
			}
		}},
		{name: "env", args: []string{"login", "--grant", "a,b", "--grant", "c", "--format", "env", "--ttl", "90s"}, check: func(t *testing.T, out, tok string) {
			if out != "MAYFLY_TOKEN="+tok+"\nMAYFLY_GATEWAY="+fs.URL+"/gw\n" {
				t.Errorf("out %q", out)
			}
			f := fs.forms[len(fs.forms)-1]
			if f["scope"][0] != "a b c" || f["ttl"][0] != "90" || f["subject_token"][0] != fakeJWT ||
				f["subject_token_type"][0] != "urn:ietf:params:oauth:token-type:id_token" {
				t.Errorf("form %v", f)
			}
		}},
		{name: "json", args: []string{"login", "--grant", "deploy", "--format", "json"}, check: func(t *testing.T, out, tok string) {
			var v map[string]any
			if json.Unmarshal([]byte(out), &v) != nil || v["access_token"] != tok || v["lease_id"] != "lse_test" {
				t.Errorf("out %q", out)
			}
		}},
		{name: "github-env", args: []string{"login", "--grant", "deploy", "--format", "github-env"}, env: map[string]string{"GITHUB_ENV": ghEnv},
			check: func(t *testing.T, out, tok string) {
				if out != "::add-mask::"+tok+"\n" {
					t.Errorf("out %q", out)
				}
				b, _ := os.ReadFile(ghEnv)
				if string(b) != "MAYFLY_TOKEN="+tok+"\nMAYFLY_GATEWAY="+fs.URL+"/gw\n" {
					t.Errorf("GITHUB_ENV %q", b)
				}
			}},
		{name: "github-env without GITHUB_ENV", args: []string{"login", "--grant", "deploy", "--format", "github-env"}, code: 2, errMatch: "GITHUB_ENV"},
		{name: "bad format", args: []string{"login", "--grant", "deploy", "--format", "yaml"}, code: 2, errMatch: "unknown --format"},
		{name: "no grant", args: []string{"login"}, code: 2, errMatch: "--grant"},
		{name: "refused", args: []string{"login", "--grant", "forbidden"}, code: 1, errMatch: "invalid_scope: not for you"},
		{name: "no id token", args: []string{"login", "--grant", "deploy"}, env: map[string]string{"MAYFLY_ID_TOKEN": ""}, code: 2, errMatch: "no ID token found"},
		{name: "id token env", args: []string{"login", "--grant", "deploy", "--id-token-env", "CI_JOB_JWT_V2"}, env: map[string]string{"MAYFLY_ID_TOKEN": "", "CI_JOB_JWT_V2": fakeJWT}},
		{name: "plain http off loopback", args: []string{"login", "--grant", "deploy", "--addr", "http://mayfly.example"}, code: 2, errMatch: "plain http"},
		{name: "unreachable", args: []string{"login", "--grant", "deploy", "--addr", "http://127.0.0.1:1"}, code: 2, errMatch: "cannot reach"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, errOut, code := runCLI(t, "", tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errOut)
			}
			if tc.errMatch != "" && !strings.Contains(errOut, tc.errMatch) {
				t.Errorf("stderr %q, want %q", errOut, tc.errMatch)
			}
			tok, _ := fs.last()
			if tc.code != 0 && tok != "" && strings.Contains(errOut, tok) {
				t.Error("stderr holds a token")
			}
			if tc.check != nil {
				tc.check(t, out, tok)
			}
		})
	}
}

func TestLoginGitHubRequestURL(t *testing.T) {
	fs := newFakeServer(t)
	jobEnv(t, fs.URL)
	t.Setenv("MAYFLY_ID_TOKEN", "")
	var aud string
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer rt-123" {
			w.WriteHeader(401)
			return
		}
		aud = r.URL.Query().Get("audience")
		_ = json.NewEncoder(w).Encode(map[string]string{"value": fakeJWT})
	}))
	t.Cleanup(gh.Close)
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_URL", gh.URL+"/?api-version=2.0")
	t.Setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "rt-123")

	if _, e, code := runCLI(t, "", "login", "--grant", "deploy"); code != 0 || aud != fs.URL {
		t.Fatalf("exit %d (%s), audience %q want %q", code, e, aud, fs.URL)
	}
	if _, _, code := runCLI(t, "", "login", "--grant", "deploy", "--audience", "custom"); code != 0 || aud != "custom" {
		t.Fatalf("exit %d, audience %q", code, aud)
	}
	t.Setenv("MAYFLY_AUDIENCE", "from-env")
	if _, _, code := runCLI(t, "", "login", "--grant", "deploy"); code != 0 || aud != "from-env" {
		t.Fatalf("exit %d, audience %q", code, aud)
	}
}

func TestExecUnit(t *testing.T) {
	fs := newFakeServer(t)
	jobEnv(t, fs.URL)
	t.Setenv("EXTRA_SECRET", "hunter2-but-longer")

	// The child sees the token and the gateway, prints both; output masked;
	// exit code propagated; token revoked.
	script := `printf 'tok=%s gw=%s extra=%s\n' "$MAYFLY_TOKEN" "$MAYFLY_GATEWAY" "$EXTRA_SECRET"; echo "err $MAYFLY_TOKEN" >&2; exit 7`
	out, errOut, code := runCLI(t, "", "exec", "--grant", "deploy", "--mask-env", "EXTRA_SECRET", "--", "sh", "-c", script)
	tok, revoked := fs.last()
	if code != 7 {
		t.Fatalf("exit %d, want 7; stderr %q", code, errOut)
	}
	if out != "tok=*** gw="+fs.URL+"/gw extra=***\n" || !strings.Contains(errOut, "err ***") {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	if strings.Contains(out+errOut, tok) {
		t.Error("token leaked into output")
	}
	if len(revoked) != 1 || revoked[0] != tok {
		t.Errorf("revoked %d tokens", len(revoked))
	}

	// Death by signal: 128+15, and still revoked.
	_, _, code = runCLI(t, "", "exec", "--grant", "deploy", "--", "sh", "-c", "kill -TERM $$")
	tok, revoked = fs.last()
	if code != 128+15 || revoked[len(revoked)-1] != tok {
		t.Errorf("exit %d, revoked last %v", code, revoked[len(revoked)-1] == tok)
	}

	// Flags after CMD belong to CMD; stdin passes through.
	out, _, code = runCLI(t, "piped\n", "exec", "--grant", "deploy", "sh", "-c", "cat; echo --grant")
	if code != 0 || out != "piped\n--grant\n" {
		t.Errorf("exit %d out %q", code, out)
	}

	// A command that does not exist: 127, token revoked.
	_, errOut, code = runCLI(t, "", "exec", "--grant", "deploy", "--", "/nonexistent/cmd")
	tok, revoked = fs.last()
	if code != 127 || revoked[len(revoked)-1] != tok || !strings.Contains(errOut, "/nonexistent/cmd") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}

	// A --mask-env value too short to mask is refused before any exchange.
	t.Setenv("SHORT", "abc")
	n := len(fs.issued)
	if _, _, code := runCLI(t, "", "exec", "--grant", "deploy", "--mask-env", "SHORT", "--", "true"); code != exitExecFailed || len(fs.issued) != n {
		t.Errorf("exit %d, issued %d more", code, len(fs.issued)-n)
	}
	// Refusal: exec's own failure (125), nothing run.
	if out, _, code := runCLI(t, "", "exec", "--grant", "forbidden", "--", "echo", "ran"); code != exitExecFailed || out != "" {
		t.Errorf("exit %d out %q", code, out)
	}
}

func TestChildEnv(t *testing.T) {
	tok, _ := token.New(token.Job)
	c, err := client.New(client.Config{Addr: "https://m:1"})
	if err != nil {
		t.Fatal(err)
	}
	e := childEnv([]string{"PATH=/bin", "MAYFLY_TOKEN=mfya_old", "MAYFLY_GATEWAY=x"},
		&exchanged{resp: &apitype.TokenResponse{AccessToken: tok}, client: c}, "", nil)
	got := map[string]int{}
	for _, kv := range e {
		got[kv]++
	}
	if got["PATH=/bin"] != 1 || got["MAYFLY_TOKEN="+tok] != 1 || got["MAYFLY_GATEWAY=https://m:1/gw"] != 1 || len(e) != 3 {
		t.Errorf("env %v", e)
	}
}

// exec's own failures (125) are told apart from CMD's exit codes, which
// pass through whatever they are.
func TestExecExitCodes(t *testing.T) {
	fs := newFakeServer(t)
	jobEnv(t, fs.URL)
	notExec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		addr   string
		args   []string
		code   int
		stderr string
	}{
		{name: "CMD exits 1", args: []string{"--grant", "deploy", "--", "sh", "-c", "exit 1"}, code: 1},
		{name: "CMD exits 2", args: []string{"--grant", "deploy", "--", "sh", "-c", "exit 2"}, code: 2},
		{name: "CMD exits 124", args: []string{"--grant", "deploy", "--", "sh", "-c", "exit 124"}, code: 124},
		{name: "refused", args: []string{"--grant", "forbidden", "--", "true"}, code: exitExecFailed, stderr: "exec: token exchange refused: invalid_scope"},
		{name: "unreachable", addr: "http://127.0.0.1:1", args: []string{"--grant", "deploy", "--", "true"}, code: exitExecFailed, stderr: "exec: token exchange: cannot reach"},
		{name: "no grant", args: []string{"--", "true"}, code: exitExecFailed, stderr: "exec: --grant NAME is required"},
		{name: "no command", args: []string{"--grant", "deploy"}, code: exitExecFailed, stderr: "no command given"},
		{name: "unknown flag", args: []string{"--grnat", "deploy", "--", "true"}, code: exitExecFailed, stderr: "unknown flag: --grnat"},
		{name: "not executable", args: []string{"--grant", "deploy", "--", notExec}, code: exitCannotExecute, stderr: "not-executable"},
		{name: "not found", args: []string{"--grant", "deploy", "--", "/nonexistent/cmd"}, code: exitNotFound, stderr: "/nonexistent/cmd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.addr != "" {
				t.Setenv("MAYFLY_ADDR", tc.addr)
			}
			_, stderr, code := runCLI(t, "", append([]string{"exec"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.stderr)
			}
			// A refusal also prints the ID token's claims first.
			if i := strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n"); tc.stderr != "" {
				oneLineErr(t, tc.args, stderr[i+1:])
			}
		})
	}
}
