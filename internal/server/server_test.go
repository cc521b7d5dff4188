package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// testIssuer is a real OIDC issuer on loopback: discovery, JWKS, RS256.
type testIssuer struct {
	srv    *httptest.Server
	key    *rsa.PrivateKey
	signer jose.Signer
	n      int
	mu     sync.Mutex
}

func newTestIssuer(t testing.TB) *testIssuer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &testIssuer{key: k}
	is.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

func (is *testIssuer) mint(t testing.TB, claims map[string]any) string {
	is.mu.Lock()
	is.n++
	n := is.n
	is.mu.Unlock()
	now := time.Now()
	c := map[string]any{"iss": is.srv.URL, "aud": "https://mayfly.test", "sub": "repo:acme/app:ref:refs/heads/main",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": fmt.Sprintf("jti-%d-%d", n, now.UnixNano()),
		"repository": "acme/app", "repository_id": "123456789", "ref": "refs/heads/main", "run_id": "777"}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jwt.Signed(is.signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const plantedSecret = "ghp_PLANTEDsecretVALUE0123456789abcdefXYZ"

type harness struct {
	t      *testing.T
	srv    *Server
	http   *httptest.Server
	issuer *testIssuer
	admin  string
	dir    string
	logs   *bytes.Buffer
}

func policyYAML(issuerURL string, extra string) string {
	return fmt.Sprintf(`issuers:
  ci:
    url: %s
    audience: https://mayfly.test
upstreams:
  api:
    url: http://127.0.0.1:1
    credential:
      secret: gh
grants:
  deploy:
    upstream: api
    ttl: 10m
    max_ttl: 1h
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**"]
    who:
      - issuer: ci
        claims:
          repository_id: "123456789"
          ref: refs/heads/main
  read:
    upstream: api
    ttl: 5m
    allow:
      - methods: [GET]
        paths: ["/repos/**"]
    who:
      - issuer: ci
        claims:
          repository_id: "123456789"
%s`, issuerURL, extra)
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	res, err := Init(ctx, InitOptions{DataDir: dir, Postgres: cfg.Postgres})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, admin: res.AdminToken, issuer: newTestIssuer(t), logs: &bytes.Buffer{}}
	cfg.DataDir = dir
	cfg.InsecureHTTP = true
	cfg.Listen = "127.0.0.1:0"
	logger := NewLogger(&lockedWriter{w: h.logs}, "json", "debug")
	h.srv, err = New(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.srv.Close(context.Background()) })
	h.http = httptest.NewServer(h.srv.Handler())
	t.Cleanup(h.http.Close)
	// A secret for the upstream, then the policy that names it.
	h.do("PUT", "/v1/secrets/gh", h.admin, "application/json", `{"value":"`+plantedSecret+`"}`, 200)
	h.do("PUT", "/v1/policy", h.admin, "application/yaml", policyYAML(h.issuer.srv.URL, ""), 200)
	return h
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// onBothBackends runs f as a subtest on embedded SQLite and on a fresh
// PostgreSQL schema (cfg.Postgres set; skipped without
// MAYFLY_TEST_POSTGRES): what the server does is the same on both.
func onBothBackends(t *testing.T, f func(t *testing.T, cfg Config)) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			cfg := Config{}
			if backend == "postgres" {
				cfg.Postgres = storetest.FreshSchema(t, storetest.PostgresDSN(t))
			}
			f(t, cfg)
		})
	}
}

// adminCall sends an admin request (body, when not empty, as JSON) whatever
// its answer, and returns its status and body.
func (h *harness) adminCall(method, path, body string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.http.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.admin)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (h *harness) do(method, path, bearer, ctype, body string, want int) map[string]any {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.http.URL+path, strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		h.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}

func exchangeForm(idToken, scope string) string {
	v := url.Values{}
	v.Set("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
	v.Set("subject_token", idToken)
	v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")
	v.Set("scope", scope)
	return v.Encode()
}

const form = "application/x-www-form-urlencoded"

func TestExchangeStatuses(t *testing.T) {
	h := newHarness(t, Config{})
	good := h.issuer.mint(t, nil)
	out := h.do("POST", "/v1/token", "", form, exchangeForm(good, "deploy"), 200)
	tok, _ := out["access_token"].(string)
	if k, err := token.Parse(tok); err != nil || k != token.Job {
		t.Fatalf("access_token not a job token: %v", out)
	}
	if out["token_type"] != "Bearer" || out["expires_in"].(float64) != 600 || out["scope"] != "deploy" ||
		!strings.HasPrefix(out["lease_id"].(string), "lse_") || out["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
		t.Fatalf("response = %v", out)
	}
	tests := []struct {
		name, body string
		status     int
		code       string
	}{
		{"replayed jti", exchangeForm(good, "deploy"), 400, "invalid_grant"},
		{"no grant_type", "subject_token=x", 400, "invalid_request"},
		{"wrong grant_type", "grant_type=password&subject_token=x", 400, "unsupported_grant_type"},
		{"no subject token", "grant_type=urn:ietf:params:oauth:grant-type:token-exchange", 400, "invalid_request"},
		{"no scope", exchangeForm(h.issuer.mint(t, nil), ""), 400, "invalid_scope"},
		{"unknown grant", exchangeForm(h.issuer.mint(t, nil), "nope"), 400, "invalid_scope"},
		{"not eligible: other ref", exchangeForm(h.issuer.mint(t, map[string]any{"ref": "refs/heads/dev"}), "deploy"), 400, "invalid_scope"},
		{"same name other id", exchangeForm(h.issuer.mint(t, map[string]any{"repository_id": "999"}), "read"), 400, "invalid_scope"},
		{"expired", exchangeForm(h.issuer.mint(t, map[string]any{"exp": time.Now().Add(-5 * time.Minute).Unix()}), "deploy"), 400, "invalid_grant"},
		{"wrong audience", exchangeForm(h.issuer.mint(t, map[string]any{"aud": "https://other"}), "deploy"), 400, "invalid_grant"},
		{"garbage token", exchangeForm("a.b.c", "deploy"), 400, "invalid_grant"},
		{"ttl above grant", exchangeForm(h.issuer.mint(t, nil), "deploy") + "&ttl=601", 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := h.do("POST", "/v1/token", "", form, tt.body, tt.status)
			if out["error"] != tt.code || out["error_description"] == "" {
				t.Fatalf("error = %v", out)
			}
		})
	}
	// Two grants: the token lives as long as the shorter one allows.
	out = h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy read")+"&ttl=120", 200)
	if out["expires_in"].(float64) != 120 || out["scope"] != "deploy read" {
		t.Fatalf("two grants = %v", out)
	}
}

func TestTokenLifecycleAndLeaks(t *testing.T) {
	h := newHarness(t, Config{})
	out := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)
	tok := out["access_token"].(string)
	in := h.do("POST", "/v1/introspect", h.admin, form, "token="+tok, 200)
	if in["active"] != true || in["lease_id"] != out["lease_id"] {
		t.Fatalf("introspect = %v", in)
	}
	r := h.do("POST", "/v1/token/renew", tok, "", "", 200)
	if r["lease_id"] != out["lease_id"] {
		t.Fatalf("renew = %v", r)
	}
	// A leak report with the token in a log line revokes it before answering.
	leak := h.do("POST", "/v1/leaks", "", "text/plain", "step 3: curl -H 'Authorization: Bearer "+tok+"' …", 200)
	revoked := leak["revoked"].([]any)
	if len(revoked) != 1 || revoked[0].(map[string]any)["lease_id"] != out["lease_id"] || leak["unknown"].(float64) != 0 {
		t.Fatalf("leak = %v", leak)
	}
	if hint := revoked[0].(map[string]any)["hint"].(string); strings.Contains(hint, tok) || !strings.HasPrefix(tok, strings.TrimSuffix(hint, "…")) {
		t.Fatalf("hint %q", hint)
	}
	if in := h.do("POST", "/v1/introspect", h.admin, form, "token="+tok, 200); in["active"] != false {
		t.Fatalf("introspect after leak = %v", in)
	}
	h.do("POST", "/v1/token/renew", tok, "", "", 401)
	again := h.do("POST", "/v1/leaks", "", "application/json", `[{"token":"`+tok+`","type":"mayfly","url":"https://github.com/acme/app/blob/x","source":"content"}]`, 200)
	if again["already_revoked"].(float64) != 1 {
		t.Fatalf("second report = %v", again)
	}
	// RFC 7009: unknown tokens are fine.
	h.do("POST", "/v1/revoke", "", form, "token=mfy_nothing", 200)
	// Holder revocation.
	out2 := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "read"), 200)
	h.do("POST", "/v1/revoke", "", form, "token="+out2["access_token"].(string), 200)
	if in := h.do("POST", "/v1/introspect", h.admin, form, "token="+out2["access_token"].(string), 200); in["active"] != false {
		t.Fatal("holder revocation did not take")
	}
	// Bulk revocation by job.
	var toks []string
	for i := 0; i < 3; i++ {
		o := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, map[string]any{"run_id": "900"}), "read"), 200)
		toks = append(toks, o["access_token"].(string))
	}
	rv := h.do("POST", "/v1/leases/revoke", h.admin, "application/json", `{"job":"900"}`, 200)
	if rv["revoked"].(float64) != 3 {
		t.Fatalf("bulk = %v", rv)
	}
	ls := h.do("GET", "/v1/leases?active=true", h.admin, "", "", 200)
	for _, l := range ls["leases"].([]any) {
		if l.(map[string]any)["job"] == "900" {
			t.Fatal("revoked lease listed as active")
		}
	}
	for i, tok := range toks {
		if in := h.do("POST", "/v1/introspect", h.admin, form, "token="+tok, 200); in["active"] != false {
			t.Fatalf("token %d of the revoked job still active: %v", i, in)
		}
	}
}

// The upstream credential is masked in every response the gateway relays,
// but when the upstream's answer is malformed the gateway logs Go's
// transport error, which quotes the offending response line, and so the
// whole credential the gateway injected.
func TestUpstreamMalformedEchoKeepsCredentialOutOfLogs(t *testing.T) {
	h := newHarness(t, Config{})
	// An upstream whose answer quotes the credential on a malformed line.
	up, stop, err := githubtest.Reflecting(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	h.do("PUT", "/v1/policy", h.admin, "application/yaml", strings.Replace(policyYAML(h.issuer.srv.URL, ""), "http://127.0.0.1:1", up, 1), 200)
	tok := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)["access_token"].(string)
	req, _ := http.NewRequest("GET", h.http.URL+"/gw/api/repos/acme/app/issues", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	// The gateway logs the failure before it answers: no wait needed.
	logs := h.logs.String()
	if !strings.Contains(logs, "gateway: upstream failed") {
		t.Fatalf("the failure was not logged: %s", logs)
	}
	if strings.Contains(logs, plantedSecret) {
		i := strings.Index(logs, plantedSecret)
		t.Fatalf("the server log holds the whole upstream credential: …%s…", logs[max(0, i-120):min(len(logs), i+len(plantedSecret)+10)])
	}
}

func TestPolicyChangeRevokesRemovedGrant(t *testing.T) {
	h := newHarness(t, Config{})
	out := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "read"), 200)
	// A new version without the "read" grant.
	p := policyYAML(h.issuer.srv.URL, "")
	p = p[:strings.Index(p, "  read:")]
	// Revoking live tokens needs the request to say so.
	refused := h.do("PUT", "/v1/policy", h.admin, "application/yaml", p, 409)
	if refused["error"] != "revocation_not_confirmed" || !strings.Contains(refused["error_description"].(string), "read: 1") {
		t.Fatalf("unconfirmed apply = %v", refused)
	}
	res := h.do("PUT", "/v1/policy?allow_revoke=true", h.admin, "application/yaml", p, 200)
	if res["revoked"].(float64) != 1 || res["version"].(float64) != 2 {
		t.Fatalf("apply = %v", res)
	}
	if in := h.do("POST", "/v1/introspect", h.admin, form, "token="+out["access_token"].(string), 200); in["active"] != false {
		t.Fatal("token of a removed grant still live")
	}
	bad := h.do("PUT", "/v1/policy", h.admin, "application/yaml", "grants:\n  x:\n    upstream: nope\n", 400)
	if bad["error"] != "invalid_policy" || !strings.Contains(bad["error_description"].(string), ":") {
		t.Fatalf("bad policy = %v", bad)
	}
}

func TestAdminAccess(t *testing.T) {
	h := newHarness(t, Config{TrustedProxies: []string{"127.0.0.1/32"}})
	aud := h.do("POST", "/v1/admin/tokens", h.admin, "application/json", `{"name":"alice","role":"auditor"}`, 200)["token"].(string)
	forged, _ := token.New(token.Admin)
	tests := []struct {
		name, method, path, tok string
		xff                     string
		want                    int
	}{
		{"missing token", "GET", "/v1/secrets", "", "", 401},
		{"well-formed unknown", "GET", "/v1/secrets", forged, "", 401},
		{"job-shaped token", "GET", "/v1/secrets", "mfy_" + forged[5:], "", 401},
		{"auditor reads", "GET", "/v1/secrets", aud, "", 200},
		{"auditor reads audit", "GET", "/v1/audit/checkpoint", aud, "", 200},
		{"auditor may not write", "PUT", "/v1/secrets/x", aud, "", 403},
		{"auditor may not rotate", "POST", "/v1/sys/rotate-master-key", aud, "", 403},
		{"outside admin_cidrs", "GET", "/v1/secrets", h.admin, "10.9.8.7", 403},
		{"admin ok", "GET", "/v1/admin/tokens", h.admin, "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, h.http.URL+tt.path, strings.NewReader(`{"value":"abcdefgh12"}`))
			if tt.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tt.tok)
			}
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d want %d", resp.StatusCode, tt.want)
			}
		})
	}
	h.do("DELETE", "/v1/admin/tokens/alice", h.admin, "", "", 200)
	h.do("GET", "/v1/secrets", aud, "", "", 401)
}

// No planted secret value or token reaches the data dir files or the logs.
func TestNothingSecretAtRest(t *testing.T) {
	h := newHarness(t, Config{})
	out := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)
	tok := out["access_token"].(string)
	h.srv.logger().Info("a careless caller logs", "token", tok, "msg2", "bearer "+tok+" and "+h.admin)
	h.do("POST", "/v1/leaks", "", "text/plain", tok, 200)
	h.srv.Close(context.Background())
	planted := []string{plantedSecret, tok, h.admin}
	err := filepath.Walk(h.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range planted {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains a planted value (%s)", p, token.Hint(s))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range planted {
		if strings.Contains(h.logs.String(), s) {
			t.Errorf("logs contain a planted value (%s)", token.Hint(s))
		}
	}
	if !strings.Contains(h.logs.String(), token.Hint(tok)) {
		t.Error("log line lost: expected the token's hint")
	}
}

func TestInitAndListenChecks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err == nil {
		t.Fatal("second init succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("second init changed the master key")
	}
	for _, tt := range []struct {
		listen string
		ok     bool
	}{{"127.0.0.1:8443", true}, {"[::1]:8443", true}, {"localhost:80", true}, {"0.0.0.0:8443", false}, {"10.0.0.1:80", false}, {":8443", false}} {
		if err := CheckListen(tt.listen, true); (err == nil) != tt.ok {
			t.Errorf("CheckListen(%s) = %v", tt.listen, err)
		}
	}
}

func decodeJSON(resp *http.Response, v any) {
	json.NewDecoder(resp.Body).Decode(v)
}
