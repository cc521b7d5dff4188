package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/scan"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

func TestExchangeRateLimited(t *testing.T) {
	h := newHarness(t, Config{Limits: ConfigLimits{TokenRate: 1, TokenBurst: 3}})
	got429 := false
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest("POST", h.http.URL+"/v1/token", strings.NewReader(exchangeForm(h.issuer.mint(t, nil), "deploy")))
		req.Header.Set("Content-Type", form)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			got429 = true
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			break
		}
	}
	if !got429 {
		t.Fatal("no 429 after a burst of exchanges from one address")
	}
}

func TestExchangeDPoPBinding(t *testing.T) {
	h := newHarness(t, Config{})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	exchange := func(proof string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest("POST", h.http.URL+"/v1/token", strings.NewReader(exchangeForm(h.issuer.mint(t, nil), "deploy")))
		req.Header.Set("Content-Type", form)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		decodeJSON(resp, &out)
		return resp, out
	}
	proof, err := dpop.NewProof(key, "POST", h.http.URL+"/v1/token", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, out := exchange(proof)
	if resp.StatusCode != 200 || out["token_type"] != "DPoP" {
		t.Fatalf("DPoP exchange = %d %v", resp.StatusCode, out)
	}
	in := h.do("POST", "/v1/introspect", h.admin, form, "token="+out["access_token"].(string), 200)
	want, _ := dpop.Thumbprint(&key.PublicKey)
	if cnf, _ := in["cnf"].(map[string]any); cnf["jkt"] != want {
		t.Fatalf("token not bound to the proof key: %v", in)
	}
	// A replayed proof, a proof for another URL and a garbage proof fail.
	wrongURL, _ := dpop.NewProof(other, "POST", "https://elsewhere.example/v1/token", "", time.Now())
	for name, p := range map[string]string{"replayed": proof, "wrong url": wrongURL, "garbage": "x.y.z"} {
		if resp, out := exchange(p); resp.StatusCode != 400 || out["error"] != "invalid_dpop_proof" {
			t.Errorf("%s proof: %d %v", name, resp.StatusCode, out)
		}
	}
}

// The file sink gets the log from index 0. On PostgreSQL its file is on
// this node's disk and its cursor is the node's own (by host name): other
// nodes' files do not share it.
func TestAuditFileSink(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		cursor := "sink:file:" + path
		if cfg.Postgres != "" {
			host, _ := os.Hostname()
			cursor += "@" + host
		}
		cfg.AuditSinks = []SinkConfig{{Type: "file", Path: path}}
		h := newHarness(t, cfg)
		h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)
		deadline := time.Now().Add(20 * time.Second)
		for {
			b, _ := os.ReadFile(path)
			if strings.Contains(string(b), `"type":"token.exchange"`) {
				if !strings.HasPrefix(string(b), `{"index":0,`) {
					t.Fatalf("sink file does not start at index 0: %.80s", b)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("exchange entry never reached the file sink: %s", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if next, err := h.srv.store.AuditCursor(context.Background(), cursor); err != nil || next == 0 {
			t.Fatalf("cursor %q at %d, %v", cursor, next, err)
		}
	})
}

// One ID token exchanged by 16 clients at once: exactly one gets a token.
func TestConcurrentDoubleExchange(t *testing.T) {
	h := newHarness(t, Config{})
	idt := h.issuer.mint(t, nil)
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequest("POST", h.http.URL+"/v1/token", strings.NewReader(exchangeForm(idt, "deploy")))
			req.Header.Set("Content-Type", form)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}(i)
	}
	wg.Wait()
	wins := 0
	for _, c := range codes {
		switch c {
		case 200:
			wins++
		case 400:
		default:
			t.Fatalf("unexpected status %d", c)
		}
	}
	if wins != 1 {
		t.Fatalf("%d exchanges of one ID token succeeded, want 1 (%v)", wins, codes)
	}
	ls := h.do("GET", "/v1/leases", h.admin, "", "", 200)["leases"].([]any)
	if len(ls) != 1 {
		t.Fatalf("%d leases stored for one ID token", len(ls))
	}
}

func TestLeakReportBounds(t *testing.T) {
	h := newHarness(t, Config{})
	huge := strings.Repeat("x", 2<<20)
	req, _ := http.NewRequest("POST", h.http.URL+"/v1/leaks", strings.NewReader(huge))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 MiB leak report: %d", resp.StatusCode)
	}
	// JSON that is no alert is text like any other: nothing in it, nothing done.
	odd := h.do("POST", "/v1/leaks", "", "application/json", `[{"token": 5}]`, 200)
	if len(odd["revoked"].([]any)) != 0 || odd["unknown"].(float64) != 0 {
		t.Fatalf("JSON that is no alert: %v", odd)
	}
	// Checksum-invalid look-alikes are not tokens: nothing revoked, nothing unknown.
	ok := h.do("POST", "/v1/leaks", "", "text/plain", "mfy_000000000000000000000000000000000000", 200)
	if len(ok["revoked"].([]any)) != 0 || ok["unknown"].(float64) != 0 {
		t.Fatalf("look-alike: %v", ok)
	}
}

func TestSecretInputErrors(t *testing.T) {
	h := newHarness(t, Config{})
	for _, tt := range []struct{ path, body string }{
		{"/v1/secrets/bad%2Fname", `{"value":"abcdefgh"}`},
		{"/v1/secrets/.hidden", `{"value":"abcdefgh"}`},
		{"/v1/secrets/ok", `{"value":""}`},
		{"/v1/secrets/ok", `{"value":"` + strings.Repeat("v", 70<<10) + `"}`},
		{"/v1/secrets/ok", `{"valu":"x"}`},
	} {
		out := h.do("PUT", tt.path, h.admin, "application/json", tt.body, http.StatusBadRequest)
		if out["error"] != "invalid_request" {
			t.Errorf("%s: %v", tt.path, out)
		}
	}
	list := h.do("GET", "/v1/secrets", h.admin, "", "", 200)["secrets"].([]any)
	if len(list) != 1 {
		t.Fatalf("a refused write changed the store: %v", list)
	}
}

// A server that cannot start says why and releases what it opened.
func TestNewFailsCleanly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	badPolicy := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(badPolicy, []byte("grants:\n  x:\n    ttl: 10x\n"), 0o600)
	for name, cfg := range map[string]Config{
		"bad admin cidr":    {AdminCIDRs: []string{"bogus"}},
		"bad trusted proxy": {TrustedProxies: []string{"not-a-cidr"}},
		"trust any proxy":   {TrustedProxies: []string{"0.0.0.0/0"}},
		"bad policy":        {Policy: []string{badPolicy}},
		"missing tls cert":  {TLSCert: "/nonexistent.pem", TLSKey: "/nonexistent.key"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.DataDir, cfg.Listen = dir, "127.0.0.1:0"
			s, err := New(context.Background(), cfg, NewLogger(io.Discard, "text", "error"))
			if err == nil {
				s.Close(context.Background())
				t.Fatal("started")
			}
		})
	}
	// The store was released: a normal start works.
	s, err := New(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0"}, NewLogger(io.Discard, "text", "error"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
}

func TestInitSharedPostgresOnce(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	first := filepath.Join(t.TempDir(), "a")
	if _, err := Init(context.Background(), InitOptions{DataDir: first, Postgres: dsn}); err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(t.TempDir(), "b")
	_, err := Init(context.Background(), InitOptions{DataDir: second, Postgres: dsn})
	if !errors.Is(err, ErrInitialised) {
		t.Fatalf("second init on one database: %v", err)
	}
	if _, statErr := os.Stat(second); !os.IsNotExist(statErr) {
		t.Fatalf("a refused init left %s behind", second)
	}
}

func TestRenewFollowsPolicyAndKey(t *testing.T) {
	h := newHarness(t, Config{})
	// A DPoP-bound token renews only with a proof of its key.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	proof, _ := dpop.NewProof(key, "POST", h.http.URL+"/v1/token", "", time.Now())
	req, _ := http.NewRequest("POST", h.http.URL+"/v1/token", strings.NewReader(exchangeForm(h.issuer.mint(t, nil), "deploy")))
	req.Header.Set("Content-Type", form)
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	decodeJSON(resp, &out)
	resp.Body.Close()
	tok := out["access_token"].(string)
	renew := func(tok, proof string) int {
		req, _ := http.NewRequest("POST", h.http.URL+"/v1/token/renew", nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := renew(tok, ""); code != 401 {
		t.Fatalf("renew without proof: %d", code)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrong, _ := dpop.NewProof(other, "POST", h.http.URL+"/v1/token/renew", tok, time.Now())
	if code := renew(tok, wrong); code != 401 {
		t.Fatalf("renew with another key's proof: %d", code)
	}
	right, _ := dpop.NewProof(key, "POST", h.http.URL+"/v1/token/renew", tok, time.Now())
	if code := renew(tok, right); code != 200 {
		t.Fatalf("renew with the bound key's proof: %d", code)
	}
	// An identity the policy no longer admits cannot renew: applying the
	// policy revoked its token (a narrowed grant).
	plain := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "read"), 200)["access_token"].(string)
	p := strings.Replace(policyYAML(h.issuer.srv.URL, ""), "  read:\n    upstream: api\n    ttl: 5m\n    allow:\n      - methods: [GET]\n        paths: [\"/repos/**\"]\n    who:\n      - issuer: ci\n        claims:\n          repository_id: \"123456789\"",
		"  read:\n    upstream: api\n    ttl: 5m\n    allow:\n      - methods: [GET]\n        paths: [\"/repos/**\"]\n    who:\n      - issuer: ci\n        claims:\n          repository_id: \"999\"", 1)
	h.do("PUT", "/v1/policy", h.admin, "application/yaml", p, 200)
	h.do("POST", "/v1/token/renew", plain, "", "", 401)
}

// A flood of bad admin calls from one address is cut off with 429 before
// each could append a durable audit entry.
func TestAdminDenialFloodBounded(t *testing.T) {
	h := newHarness(t, Config{Limits: ConfigLimits{AdminRate: 1, AdminBurst: 5}})
	before := h.srv.audit.Size()
	limited := 0
	for i := 0; i < 30; i++ {
		req, _ := http.NewRequest("GET", h.http.URL+"/v1/secrets", nil)
		req.Header.Set("Authorization", "Bearer mfya_bogus")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 20 {
		t.Fatalf("only %d of 30 bad admin calls rate-limited", limited)
	}
	if grew := h.srv.audit.Size() - before; grew > 10 {
		t.Fatalf("audit log grew by %d entries for a flood of denials", grew)
	}
}

// The exchange's DPoP htu is this node's own origin (public_url, or the
// listener's address and certificate names), never the request's Host: a
// proof made for another site and relayed with that site's Host is refused.
func TestExchangeDPoPHostNotTrusted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		publicURL string
		host      string // "" = as dialled
		htu       string // "" = h.http.URL
		want      int
	}{
		{"own address", "", "", "", 200},
		{"forged host", "", "evil.example", "http://evil.example", 400},
		{"forged host, https", "", "evil.example", "https://evil.example", 400},
		{"public url", "https://mayfly.example.com", "", "https://mayfly.example.com", 200},
		{"public url, host forged to match", "https://mayfly.example.com", "evil.example", "http://evil.example", 400},
		{"public url set, proof for the dialled address", "https://mayfly.example.com", "", "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{PublicURL: tc.publicURL})
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			htu := tc.htu
			if htu == "" {
				htu = h.http.URL
			}
			proof, err := dpop.NewProof(key, "POST", htu+"/v1/token", "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", h.http.URL+"/v1/token", strings.NewReader(exchangeForm(h.issuer.mint(t, nil), "deploy")))
			req.Header.Set("Content-Type", form)
			req.Header.Set("DPoP", proof)
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			decodeJSON(resp, &out)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d %v, want %d", resp.StatusCode, out, tc.want)
			}
			if tc.want == 400 && out["error"] != "invalid_dpop_proof" {
				t.Fatalf("error %v", out)
			}
		})
	}
}

func TestPublicURLChecked(t *testing.T) {
	for _, bad := range []string{"mayfly.example.com", "ftp://mayfly.example.com", "https://mayfly.example.com/gw", "https://u@mayfly.example.com", "https://mayfly.example.com/?a=b", "https://"} {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
			t.Fatal(err)
		}
		s, err := New(context.Background(), Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0", PublicURL: bad}, nil)
		if err == nil {
			s.Close(context.Background())
			t.Fatalf("public_url %q accepted", bad)
		}
		if !strings.Contains(err.Error(), "public_url") {
			t.Fatalf("public_url %q: error %v", bad, err)
		}
	}
}

// A leak report with more tokens than the cap is refused whole (413) and
// changes nothing, so the work of one report is bounded; at the cap it is
// taken. A report beyond what the parser takes (scan.MaxLeakTokens) is
// refused too, never cut short.
func TestLeakReportTokenCap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  int
		tokens int // made-up tokens besides the live one
		want   int
	}{
		{"at the cap", 50, 49, 200},
		{"over the cap", 50, 50, 413},
		{"over the default cap", 0, 1000, 413},
		{"over the parser's bound", 50000, scan.MaxLeakTokens, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{Limits: ConfigLimits{MaxLeakTokens: tc.limit}})
			live := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)["access_token"].(string)
			var b strings.Builder
			b.WriteString(live + "\n")
			for range tc.tokens {
				tok, _ := token.New(token.Job)
				b.WriteString(tok + "\n")
			}
			out := h.do("POST", "/v1/leaks", "", "text/plain", b.String(), tc.want)
			active := h.do("POST", "/v1/introspect", h.admin, form, "token="+live, 200)["active"] == true
			if active != (tc.want != 200) {
				t.Fatalf("live token active = %v after a %d answer %v", active, tc.want, out)
			}
			if tc.want == 413 && (out["error"] != "invalid_request" || !strings.Contains(out["error_description"].(string), "nothing was revoked")) {
				t.Fatalf("413 body %v", out)
			}
		})
	}
}

// A body whose declared length is over its endpoint's limit is refused on
// the headers, before any of it arrives, with the status the endpoint
// gives such a body once read.
func TestDeclaredLengthOverLimit(t *testing.T) {
	h := newHarness(t, Config{})
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"POST", "/v1/token", "", 400}, // an ID token too large (SPEC section 4)
		{"POST", "/v1/revoke", "", 413},
		{"POST", "/v1/leaks", "", 413},
		{"PUT", "/v1/policy", h.admin, 413},
		{"PUT", "/v1/secrets/x", h.admin, 400},
	} {
		c, err := net.Dial("tcp", h.http.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 50000000\r\n\r\n", tc.method, tc.path, tc.auth)
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) // bounds a hang; measures nothing
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != tc.want {
			t.Fatalf("%s %s: %v %v, want %d", tc.method, tc.path, resp, err, tc.want)
		}
	}
}
