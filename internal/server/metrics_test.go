package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/version"
)

// scrape reads /metrics from url with an optional bearer token.
func scrape(t *testing.T, url, bearer string, want int) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return string(b)
}

// metricValue finds one sample line "name{labels} value" in a scrape.
func metricValue(body, series string) string {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, Config{})
	// On the API's listener /metrics names upstreams: auditors only.
	scrape(t, h.http.URL+"/metrics", "", 401)
	auditor := h.do("POST", "/v1/admin/tokens", h.admin, "application/json", `{"name":"prom","role":"auditor"}`, 200)["token"].(string)

	issued := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)["access_token"].(string)
	other := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "read"), 200)["access_token"].(string)
	third := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, map[string]any{"run_id": "31"}), "read"), 200)["access_token"].(string)
	h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, map[string]any{"ref": "refs/heads/dev"}), "deploy"), 400)
	h.do("POST", "/v1/token", "", form, exchangeForm("a.b.c", "deploy"), 400)
	h.do("POST", "/v1/leaks", "", "text/plain", "log: "+issued+" and mfy_000000000000000000000000000000xxxxxx", 200)
	h.do("POST", "/v1/revoke", "", form, "token="+other, 200)
	h.do("POST", "/v1/leases/revoke", h.admin, "application/json", `{"job":"31"}`, 200)
	_ = third

	body := scrape(t, h.http.URL+"/metrics", auditor, 200)
	v := version.Get()
	tests := []struct{ series, want string }{
		{`mayfly_exchanges_total{reason="",result="issued"}`, "3"},
		{`mayfly_exchanges_total{reason="invalid_scope",result="refused"}`, "1"},
		{`mayfly_exchanges_total{reason="invalid_grant",result="refused"}`, "1"},
		{`mayfly_leaked_tokens_total{outcome="revoked"}`, "1"},
		{`mayfly_leases_revoked_total{cause="leak"}`, "1"},
		{`mayfly_leases_revoked_total{cause="holder"}`, "1"},
		{`mayfly_leases_revoked_total{cause="admin"}`, "1"},
		{`mayfly_leases_revoked_total{cause="policy"}`, "0"},
		{`mayfly_leases_active`, "0"},
		{`mayfly_build_info{goversion="` + v.GoVersion + `",revision="` + v.Revision + `",version="` + v.Version + `"}`, "1"},
		{`mayfly_http_requests_total{code="401",route="/metrics"}`, "1"},
	}
	for _, tt := range tests {
		if got := metricValue(body, tt.series); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.series, got, tt.want)
		}
	}
	// One label name for status codes everywhere; the tree size is named
	// for what it counts.
	for _, bad := range []string{`status="`, "mayfly_audit_size"} {
		if strings.Contains(body, bad) {
			t.Errorf("scrape has %s", bad)
		}
	}
	if !strings.Contains(body, "mayfly_audit_log_entries ") {
		t.Error("no mayfly_audit_log_entries")
	}
	if strings.Contains(body, issued) || strings.Contains(body, plantedSecret) {
		t.Fatal("a token or secret in the metrics")
	}
}

// Serve opens the unauthenticated metrics listener on its own address
// before it says it is ready; one that cannot bind does not stop the node.
func TestMetricsListener(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tt := range []struct {
		name, addr string
		served     bool
		log        string
	}{
		{"loopback", "127.0.0.1:0", true, "metrics listening"},
		{"off", "off", false, ""},
		{"address in use", busy.Addr().String(), false, "metrics listener not started"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf strings.Builder
			lw := &lockedWriter{w: &buf}
			logs := func() string { lw.mu.Lock(); defer lw.mu.Unlock(); return buf.String() }
			addrFile := filepath.Join(t.TempDir(), "addr")
			s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: tt.addr, AddrFile: addrFile}, NewLogger(lw, "text", "info"))
			if err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Serve(sctx) }()
			defer func() {
				stop()
				if err := <-done; err != nil {
					t.Error(err)
				}
				s.Close(ctx)
			}()
			// The addr file is written once the node is ready, after the
			// metrics listener was opened or given up.
			for {
				if _, err := os.Stat(addrFile); err == nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			l := logs()
			if tt.log != "" && !strings.Contains(l, tt.log) {
				t.Fatalf("logs lack %q: %s", tt.log, l)
			}
			m := regexp.MustCompile(`msg="metrics listening" url=(\S+)`).FindStringSubmatch(l)
			if (m != nil) != tt.served {
				t.Fatalf("metrics served: %v, want %v; logs: %s", m != nil, tt.served, l)
			}
			if m == nil {
				return
			}
			if body := scrape(t, m[1], "", 200); !strings.Contains(body, "mayfly_build_info{") {
				t.Fatalf("metrics listener: %.300s", body)
			}
		})
	}
}

// An empty policy (or any that removes grants with live tokens) is not
// applied unless the request confirms the revocations; plan shows them.
func TestApplyThatRevokesNeedsConfirmation(t *testing.T) {
	h := newHarness(t, Config{})
	tok := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy read"), 200)["access_token"].(string)
	h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "read"), 200)
	live := func() bool {
		return h.do("POST", "/v1/introspect", h.admin, form, "token="+tok, 200)["active"] == true
	}
	plan := h.do("POST", "/v1/policy/plan", h.admin, "application/yaml", "", 200)
	revs, _ := json.Marshal(plan["revokes"])
	if string(revs) != `[{"grant":"deploy","leases":1},{"grant":"read","leases":2}]` {
		t.Fatalf("plan revokes %s", revs)
	}
	for _, tt := range []struct {
		name, query string
		status      int
	}{
		{"no query", "", 409},
		{"false", "?allow_revoke=false", 409},
		{"misspelt", "?allow-revoke=true", 409},
		{"other value", "?allow_revoke=yes", 409},
	} {
		out := h.do("PUT", "/v1/policy"+tt.query, h.admin, "application/yaml", "", tt.status)
		if out["error"] != "revocation_not_confirmed" || !strings.Contains(out["error_description"].(string), "3 live token(s) (deploy: 1, read: 2)") {
			t.Fatalf("%s: %v", tt.name, out)
		}
		if !live() {
			t.Fatalf("%s: a refused apply revoked the token", tt.name)
		}
	}
	// A version that keeps every grant with live tokens needs nothing.
	h.do("PUT", "/v1/policy", h.admin, "application/yaml", policyYAML(h.issuer.srv.URL, "# same grants\n"), 200)
	res := h.do("PUT", "/v1/policy?allow_revoke=true", h.admin, "application/yaml", "", 200)
	if res["revoked"].(float64) != 2 || live() {
		t.Fatalf("confirmed apply = %v, token live %v", res, live())
	}
}
