package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/server"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// exec keeps the token alive while CMD runs, a key-bound one (--dpop-key)
// as well as a bearer one: the renewal of a key-bound token needs a DPoP
// proof of its key.
func TestExecRenewsToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server and waits for a renewal")
	}
	// exec renews at two thirds of the token's life, counted from when it
	// sent the exchange: a 30s token is renewed about 20s in, 10s before it
	// expires, a margin a loaded machine (the race detector, CI) does not
	// eat up as it did the 3s of a 9s token. CMD runs until the test has
	// seen the renewal at the server, not for a fixed time.
	const ttl = 30 * time.Second

	iss := devissuertest.Start(t)
	ls := startServer(t, server.Config{}, nil)
	ls.env(t, ls.admin)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, devDeployPolicy(iss.URL(), ls.addr), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, code := runCLI(t, "upstream-credential-value\n", "secret", "put", "api-token"); code != 0 {
		t.Fatalf("secret put: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "", "policy", "apply", pol); code != 0 {
		t.Fatalf("policy apply: %d %s", code, e)
	}
	admin, err := client.New(client.Config{Addr: ls.addr, CACertFile: ls.caFile, Token: ls.admin, AdminToken: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"MAYFLY_TOKEN", "MAYFLY_ID_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "MAYFLY_AUDIENCE", "GITHUB_ENV"} {
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
			t.Parallel() // each waits ~20s for its renewal; the ID token comes from a file, the lease by its job
			job := "renew-" + tc.name
			idt, err := iss.Mint(map[string]any{"job_id": job}, ls.addr, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			idFile, release := filepath.Join(dir, "id-token"), filepath.Join(dir, "release")
			if err := os.WriteFile(idFile, []byte(idt), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"exec", "--grant", "deploy", "--ttl", ttl.String(), "--id-token-file", idFile}
			if tc.dpop {
				args = append(args, "--dpop-key", filepath.Join(dir, "k.pem"))
			}
			// CMD runs until the test releases it.
			args = append(args, "--", "sh", "-c", `until [ -e "$1" ]; do sleep 0.1; done`, "sh", release)
			type result struct {
				stderr string
				code   int
			}
			ran := make(chan result, 1)
			go func() {
				_, stderr, code := runCLI(t, "", args...)
				ran <- result{stderr, code}
			}()
			// finish lets CMD end, and exec with it, and returns what exec said.
			var finished *result
			finish := func() result {
				if finished == nil {
					_ = os.WriteFile(release, nil, 0o600)
					r := <-ran
					finished = &r
				}
				return *finished
			}
			defer finish()
			fail := func(format string, args ...any) {
				r := finish()
				t.Fatalf(format+"; exec exited %d: %s", append(args, r.code, r.stderr)...)
			}

			// The renewal has landed once the lease expires later than
			// its first ttl; it came too late if the lease expired first.
			for renewed := false; !renewed; {
				select {
				case r := <-ran:
					finished = &r
					fail("exec ended before its token was renewed")
				case <-time.After(100 * time.Millisecond):
				}
				list, err := admin.ListLeases(t.Context(), client.LeaseQuery{Job: job})
				if err != nil {
					fail("%v", err)
				}
				if len(list.Leases) == 0 {
					continue // the exchange has not been answered yet
				}
				if len(list.Leases) != 1 {
					fail("%d leases for job %s, want 1", len(list.Leases), job)
				}
				l := list.Leases[0]
				switch {
				case l.RevokedAt != nil:
					fail("the lease was revoked (%s) while CMD ran", l.Reason)
				case l.ExpiresAt.After(l.IssuedAt.Add(ttl)):
					renewed = true
				case !time.Now().Before(l.ExpiresAt):
					fail("the token expired at %s, %s after issue, without a renewal", l.ExpiresAt, ttl)
				}
			}
			if r := finish(); r.code != 0 || strings.Contains(r.stderr, "renewing the job token failed") {
				t.Fatalf("exit %d; the token was not renewed while CMD ran: %s", r.code, r.stderr)
			}
		})
	}
}

// gatedServer imitates the job-facing endpoints as fakeServer does, but
// holds the request to path until release is closed, so a test can act
// while mayfly waits for it.
type gatedServer struct {
	*httptest.Server
	arrived, release chan struct{}
	mu               sync.Mutex
	issued           string
	revoked          []string
}

func newGatedServer(t *testing.T, path string) *gatedServer {
	gs := &gatedServer{arrived: make(chan struct{}), release: make(chan struct{})}
	var once sync.Once
	gs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.URL.Path == path {
			once.Do(func() { close(gs.arrived) })
			<-gs.release
		}
		gs.mu.Lock()
		defer gs.mu.Unlock()
		switch r.URL.Path {
		case "/v1/token":
			gs.issued, _ = token.New(token.Job)
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": gs.issued, "token_type": "Bearer", "expires_in": 600,
				"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "deploy", "lease_id": "lse_test"})
		case "/v1/revoke":
			gs.revoked = append(gs.revoked, r.PostForm.Get("token"))
		}
	}))
	t.Cleanup(func() {
		select {
		case <-gs.release:
		default:
			close(gs.release)
		}
		gs.Close()
	})
	return gs
}

// From the exchange until the revocation, a signal (SIGHUP and SIGQUIT
// kill a Go program by default) or a reader that goes away (`mayfly exec
// CMD | head`: SIGPIPE on the next write to stdout) must not kill mayfly
// before it has revoked the job token.
func TestExecRevokesDespiteSignals(t *testing.T) {
	if testing.Short() || runtime.GOOS == "windows" {
		t.Skip("builds the binary; Unix signals")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mayfly")
	if out, err := exec.Command("go", "build", "-tags", buildTags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := func(addr string) []string {
		return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "MAYFLY_ADDR=" + addr, "MAYFLY_ID_TOKEN=" + fakeJWT}
	}

	t.Run("stdout closed", func(t *testing.T) {
		gs := newGatedServer(t, "")
		codeFile := filepath.Join(t.TempDir(), "code")
		c := exec.Command("sh", "-c", `{ "$BIN" exec --grant deploy -- sh -c 'while :; do echo line; done'; echo $? > "$CODE"; } | head -n 1`)
		c.Env = append(env(gs.URL), "BIN="+bin, "CODE="+codeFile)
		out, err := c.CombinedOutput()
		if err != nil || string(out) != "line\n" {
			t.Fatalf("pipeline: %v %q", err, out)
		}
		code, _ := os.ReadFile(codeFile)
		gs.mu.Lock()
		defer gs.mu.Unlock()
		if gs.issued == "" || !slices.Contains(gs.revoked, gs.issued) {
			t.Fatalf("the job token was issued (%v) but not revoked; mayfly exited %s", gs.issued != "", code)
		}
		// CMD died of the broken pipe (128+SIGPIPE), as it would under sh.
		if got := strings.TrimSpace(string(code)); got != "141" {
			t.Errorf("exit %s, want 141", got)
		}
	})

	tests := []struct {
		name     string
		sig      syscall.Signal
		at       string // the request being answered when the signal comes
		cmd      string
		wantCode int
	}{
		// Before CMD starts, the signal waits for it: CMD dies of it.
		{"SIGHUP during the exchange", syscall.SIGHUP, "/v1/token", "exec sleep 5", 128 + int(syscall.SIGHUP)},
		{"SIGHUP during the revocation", syscall.SIGHUP, "/v1/revoke", "true", 0},
		{"SIGQUIT during the revocation", syscall.SIGQUIT, "/v1/revoke", "true", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gs := newGatedServer(t, tc.at)
			c := exec.Command(bin, "exec", "--grant", "deploy", "--", "sh", "-c", tc.cmd)
			c.Env = env(gs.URL)
			var stderr strings.Builder
			c.Stderr = &stderr
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-gs.arrived:
			case <-time.After(20 * time.Second):
				_ = c.Process.Kill()
				t.Fatal("mayfly never asked the server")
			}
			if err := c.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // delivered before the answer
			close(gs.release)
			err := c.Wait()
			var ee *exec.ExitError
			code := 0
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			gs.mu.Lock()
			defer gs.mu.Unlock()
			if code != tc.wantCode || gs.issued == "" || !slices.Contains(gs.revoked, gs.issued) {
				t.Fatalf("exit %d (want %d; -1: killed), token issued %v, revoked %v; stderr %q",
					code, tc.wantCode, gs.issued != "", slices.Contains(gs.revoked, gs.issued), stderr.String()[:min(stderr.Len(), 300)])
			}
		})
	}
}

// A revocation the server turns away for a moment (429, 5xx, a dropped
// connection) is tried again: one failed attempt would leave the token,
// and every credential minted for it, alive until the lease expires. A
// refusal is not retried; a budget spent is reported, never with the token.
func TestRevocationRetries(t *testing.T) {
	tests := []struct {
		name         string
		args         []string // after the command's own
		status       int      // of the failed attempts; 0: the connection is dropped
		retryAfter   string
		failures     int
		wantAttempts int
		wantRevoked  bool
	}{
		{"exec 503 audit unavailable", nil, http.StatusServiceUnavailable, "1", 1, 2, true},
		{"exec 429 rate limited", nil, http.StatusTooManyRequests, "1", 1, 2, true},
		{"exec 502 twice, no Retry-After", nil, http.StatusBadGateway, "", 2, 3, true},
		{"exec connection dropped", nil, 0, "", 1, 2, true},
		{"exec 400 not retried", nil, http.StatusBadRequest, "", 1, 1, false},
		// Retry-After past the budget: given up at once, and said so.
		{"exec budget spent", nil, http.StatusServiceUnavailable, "60", 100, 1, false},
		{"login 503 after a failed hand-over", []string{"--format", "github-env"}, http.StatusServiceUnavailable, "1", 1, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var issued string
			var revoked []string
			attempts := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				mu.Lock()
				defer mu.Unlock()
				switch r.URL.Path {
				case "/v1/token":
					issued, _ = token.New(token.Job)
					_ = json.NewEncoder(w).Encode(map[string]any{"access_token": issued, "token_type": "Bearer", "expires_in": 600,
						"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "deploy", "lease_id": "lse_test"})
				case "/v1/revoke":
					attempts++
					if attempts <= tc.failures {
						if tc.status == 0 {
							conn, _, _ := w.(http.Hijacker).Hijack()
							_ = conn.Close()
							return
						}
						if tc.retryAfter != "" {
							w.Header().Set("Retry-After", tc.retryAfter)
						}
						w.WriteHeader(tc.status)
						_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"nothing was done"}`))
						return
					}
					revoked = append(revoked, r.PostForm.Get("token"))
				}
			}))
			defer srv.Close()
			jobEnv(t, srv.URL)
			args := []string{"exec", "--grant", "deploy", "--", "true"}
			wantCode := 0
			if tc.args != nil {
				// $GITHUB_ENV is a directory: the token cannot be handed over.
				t.Setenv("GITHUB_ENV", t.TempDir())
				args = append([]string{"login", "--grant", "deploy"}, tc.args...)
				wantCode = 2
			}
			_, stderr, code := runCLI(t, "", args...)
			mu.Lock()
			defer mu.Unlock()
			if code != wantCode || attempts != tc.wantAttempts || slices.Contains(revoked, issued) != tc.wantRevoked {
				t.Fatalf("exit %d (want %d), %d attempts (want %d), revoked %v: %s",
					code, wantCode, attempts, tc.wantAttempts, slices.Contains(revoked, issued), stderr)
			}
			warned := strings.Contains(stderr, "could not revoke job token "+token.Hint(issued))
			if warned == tc.wantRevoked || strings.Contains(stderr, issued) {
				t.Errorf("warning %v, want %v, or the whole token in it: %s", warned, !tc.wantRevoked, stderr)
			}
		})
	}
}

// devDeployPolicy is a policy of one grant, deploy (GET anything on an
// upstream that is never reached), for jobs of acme/app under the dev
// issuer at issuer, with audience the server's address.
func devDeployPolicy(issuer, audience string) []byte {
	return []byte(`issuers:
  dev:
    url: ` + issuer + `
    audience: ` + audience + `
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
`)
}

// An exchange the server turns away for a moment (429, or 503: the
// issuer's keys or the audit log unavailable, nothing done) is tried
// again within a budget; a refusal is not, nor a dropped connection (the
// exchange may have been done, and the ID token is spent).
func TestExchangeRetries(t *testing.T) {
	tests := []struct {
		name         string
		status       int // of the failed attempts; 0: the connection is dropped
		retryAfter   string
		failures     int
		wantAttempts int
		wantCode     int // exec's: 125 when mayfly itself failed
	}{
		{"503 issuer keys unavailable", http.StatusServiceUnavailable, "1", 1, 2, 0},
		{"429 rate limited", http.StatusTooManyRequests, "1", 2, 3, 0},
		{"400 not retried", http.StatusBadRequest, "", 1, 1, 125},
		{"connection dropped not retried", 0, "", 1, 1, 125},
		{"budget spent", http.StatusServiceUnavailable, "60", 100, 1, 125},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			attempts := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if r.URL.Path != "/v1/token" {
					return
				}
				attempts++
				if attempts <= tc.failures {
					if tc.status == 0 {
						conn, _, _ := w.(http.Hijacker).Hijack()
						_ = conn.Close()
						return
					}
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.WriteHeader(tc.status)
					_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"keys_unavailable: issuer keys unavailable"}`))
					return
				}
				tok, _ := token.New(token.Job)
				_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 600,
					"issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "scope": "deploy", "lease_id": "lse_test"})
			}))
			defer srv.Close()
			jobEnv(t, srv.URL)
			_, stderr, code := runCLI(t, "", "exec", "--grant", "deploy", "--", "true")
			mu.Lock()
			defer mu.Unlock()
			if code != tc.wantCode || attempts != tc.wantAttempts {
				t.Fatalf("exit %d (want %d), %d attempts (want %d): %s", code, tc.wantCode, attempts, tc.wantAttempts, stderr)
			}
		})
	}
}
