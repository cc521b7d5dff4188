package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mask"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

const testCred = "ghp_UpstreamCredential0123456789abcdefXY"

// ---- test doubles that are not the real thing ----

type fixedSecrets struct{ val string }

func (s fixedSecrets) Reveal(_ context.Context, name string) ([]byte, int, error) {
	if name != "api-token" {
		return nil, 0, errors.New("no such secret")
	}
	return []byte(s.val), 1, nil
}

type policyHolder struct{ p atomic.Pointer[policy.Policy] }

func (h *policyHolder) Current() *policy.Policy { return h.p.Load() }

// failingAuditor wraps the real log and can be switched to fail or hang.
type failingAuditor struct {
	*auditlog.Log
	mode atomic.Int32 // 0 ok, 1 fail, 2 hang
	// finishGate, when set, holds Finish until it is closed.
	finishGate atomic.Pointer[chan struct{}]
}

func (f *failingAuditor) Finish(in *auditlog.Intent, whole audit.Event, outcomeType string) {
	if g := f.finishGate.Load(); g != nil {
		<-*g
	}
	f.Log.Finish(in, whole, outcomeType)
}

func (f *failingAuditor) fail(ctx context.Context) error {
	switch f.mode.Load() {
	case 1:
		return fmt.Errorf("test: %w", failclosed.ErrUnavailable)
	case 2:
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *failingAuditor) Add(ctx context.Context, ev audit.Event) auditlog.Future {
	if err := f.fail(ctx); err != nil {
		return auditlog.Answered(-1, err)
	}
	return f.Log.Add(ctx, ev)
}

func (f *failingAuditor) Begin(ctx context.Context, ev audit.Event) *auditlog.Intent {
	if err := f.fail(ctx); err != nil {
		return &auditlog.Intent{Future: auditlog.Answered(-1, err)}
	}
	return f.Log.Begin(ctx, ev)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// ---- the recording upstream ----

type seen struct {
	Method, Path, RawPath, RequestURI, RawQuery string
	Header                                      http.Header
	BodyLen                                     int64
}

type upstream struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []seen
	sse     chan struct{}
	hostile http.Handler // serves /repos/acme/app/hostile/… when set (response_test.go)
	// arrived, when set, is told of each request as it arrives, before
	// its body is read.
	arrived func(*http.Request)
}

func (u *upstream) count() int { u.mu.Lock(); defer u.mu.Unlock(); return len(u.reqs) }
func (u *upstream) last() seen { u.mu.Lock(); defer u.mu.Unlock(); return u.reqs[len(u.reqs)-1] }

func newUpstream(t *testing.T) *upstream {
	u := &upstream{sse: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		arrived := u.arrived
		u.mu.Unlock()
		if arrived != nil {
			arrived(r)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{r.Method, r.URL.Path, r.URL.RawPath, r.RequestURI, r.URL.RawQuery, r.Header.Clone(), n})
		hostile := u.hostile
		u.mu.Unlock()
		if hostile != nil && strings.HasPrefix(r.URL.Path, "/base/repos/acme/app/hostile/") {
			hostile.ServeHTTP(w, r)
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/base") {
		case "/echo":
			// Echo every request header, in the body, a response header and a trailer.
			hdr, _ := json.Marshal(r.Header)
			w.Header().Set("X-Echo", r.Header.Get("Authorization"))
			w.Header().Set("Trailer", "X-Echo-Trailer")
			w.Header().Set("Content-Type", "application/json")
			w.Write(hdr)
			fmt.Fprintf(w, "\nraw:%s\nb64:%s\n", r.Header.Get("Authorization"), base64.StdEncoding.EncodeToString([]byte(testCred)))
			w.Header().Set("X-Echo-Trailer", r.Header.Get("Authorization"))
		case "/echo-fixed":
			body := []byte(`{"authorization":"` + r.Header.Get("Authorization") + `"}`)
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body)
		case "/big":
			w.Header().Set("Content-Type", "application/octet-stream")
			io.Copy(w, io.LimitReader(&pattern{}, 64<<20))
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-u.sse:
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, "data: two\n\n")
		case "/trickle":
			// A known length, half sent now and half later.
			half := strings.Repeat("a", 4096)
			w.Header().Set("Content-Length", fmt.Sprint(2*len(half)))
			fmt.Fprint(w, half)
			w.(http.Flusher).Flush()
			select {
			case <-u.sse:
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, half)
		case "/abort":
			// Promises 1000 bytes, sends 10, and hangs up.
			w.Header().Set("Content-Length", "1000")
			fmt.Fprint(w, "0123456789")
			w.(http.Flusher).Flush()
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		case "/slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		case "/gzip":
			w.Header().Set("Content-Encoding", "br")
			w.Write([]byte("xxxx"))
		case "/ws":
			if r.Header.Get("Upgrade") != "websocket" {
				http.Error(w, "want upgrade", 400)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			// A small WebSocket peer: "cred" echoes the Authorization
			// header it got (the injected credential) in one frame, "split"
			// in three continuation frames cut inside it, "deflate" sends
			// a compressed (RSV1) frame; anything else comes back upper-cased.
			auth := r.Header.Get("Authorization")
			for {
				_, _, msg, err := wsReadFrame(brw.Reader)
				if err != nil {
					return
				}
				switch string(msg) {
				case "cred":
					wsWriteFrame(conn, true, 1, []byte("you sent: "+auth), false)
				case "split":
					m := []byte("you sent: " + auth + " ok")
					a, b := len("you sent: Bearer ")+5, len("you sent: Bearer ")+len(testCred)-2
					wsWriteFrame(conn, false, 1, m[:a], false)
					wsWriteFrame(conn, true, 9, []byte("ping"), false) // a control frame in between
					wsWriteFrame(conn, false, 0, m[a:b], false)
					wsWriteFrame(conn, true, 0, m[b:], false)
				case "deflate":
					conn.Write([]byte{0xc1, 0x02, 'h', 'i'})
				default:
					wsWriteFrame(conn, true, 1, bytes.ToUpper(msg), false)
				}
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"ok":true,"path":%q}`, r.URL.Path)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// pattern is an endless deterministic byte stream.
type pattern struct{ n int }

func (s *pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte('a' + (s.n+i)%26)
	}
	s.n += len(p)
	return len(p), nil
}

// ---- the harness ----

type harness struct {
	t      *testing.T
	up     *upstream
	gw     *Gateway
	srv    *httptest.Server
	leases *lease.Manager
	db     *store.DB
	log    *auditlog.Log
	aud    *failingAuditor
	clk    *clock
	pol    *policyHolder
	reg    *prometheus.Registry
	yaml   string // the policy in force at the start
}

const policyYAML = `
issuers:
  ci:
    url: https://ci.example.com
    audience: https://mayfly.test
upstreams:
  api:
    url: {{UP}}/base
    credential:
      secret: api-token
      prefix: "Bearer "
  slow:
    url: {{UP}}/base
    timeout: 300ms
    credential:
      secret: api-token
  down:
    url: {{DOWN}}
    credential:
      secret: api-token
  tls:
    url: {{TLS}}
    ca_file: {{CA}}
    credential:
      secret: api-token
  tlsnoca:
    url: {{TLS}}
    credential:
      secret: api-token
grants:
  read:
    upstream: api
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**", "/echo", "/echo-fixed", "/big", "/sse", "/trickle", "/abort", "/ws", "/gzip", "/"]
      - methods: [POST]
        paths: ["/repos/acme/app/deployments"]
      - methods: [PUT]
        paths: ["/upload"]
    who:
      - issuer: ci
        claims: {repository: acme/app}
  dav:
    upstream: api
    ttl: 10m
    allow:
      - methods: [MOVE, COPY, POST]
        paths: ["/dav/in/**"]
    who:
      - issuer: ci
        claims: {repository: acme/app}
  other:
    upstream: slow
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/slow"]
    who:
      - issuer: ci
        claims: {repository: acme/app}
  down:
    upstream: down
    ttl: 10m
    allow: [{methods: ["*"], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  tls:
    upstream: tls
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  tlsnoca:
    upstream: tlsnoca
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  bound:
    upstream: api
    ttl: 10m
    bind_source_ip: true
    allow: [{methods: [GET], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  corp:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}, source_cidrs: [10.0.0.0/8]}]
`

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith is newHarness with the gateway's Config changed by opt.
func newHarnessWith(t *testing.T, opt func(*Config)) *harness {
	t.Helper()
	ctx := context.Background()
	h := &harness{t: t, up: newUpstream(t), clk: &clock{t: time.Now()}, pol: &policyHolder{}, reg: prometheus.NewRegistry()}
	db := storetest.SQLite(t).DB
	h.db = db
	hasher, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	h.leases = lease.New(db, hasher, lease.Options{Now: h.clk.Now})
	if err := h.leases.Load(ctx); err != nil {
		t.Fatal(err)
	}
	signer, _, err := audit.GenerateKey("gateway.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	h.log, err = auditlog.Open(ctx, db, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.log.Close(context.Background()) })
	h.aud = &failingAuditor{Log: h.log}

	// A closed port for the "down" upstream.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + l.Addr().String()
	l.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls ok %s", r.Header.Get("Authorization"))
	}))
	t.Cleanup(tlsSrv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600)

	y := strings.NewReplacer("{{UP}}", h.up.srv.URL, "{{DOWN}}", down, "{{TLS}}", tlsSrv.URL, "{{CA}}", caFile).Replace(policyYAML)
	p, err := policy.Parse([]policy.File{{Name: "policy.yaml", Data: []byte(y)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
	h.yaml = y
	cfg := Config{Leases: h.leases, Policies: h.pol, Secrets: fixedSecrets{testCred}, Auditor: h.aud,
		ClientIP: clientip.New(nil), Registerer: h.reg, AuditTimeout: 10 * time.Second}
	if opt != nil {
		opt(&cfg)
	}
	h.gw, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.gw.Close)
	h.srv = httptest.NewServer(h.gw)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) issue(r lease.Request) string {
	h.t.Helper()
	if r.Issuer == "" {
		r.Issuer = "ci"
	}
	if r.Claims == nil {
		r.Claims = map[string]string{"repository": "acme/app"}
	}
	if _, ok := r.Claims["iss"]; !ok {
		// As an exchange records it: the issuer's url, checked again on use.
		r.Claims = maps.Clone(r.Claims)
		r.Claims["iss"] = "https://ci.example.com"
	}
	if r.TTL == 0 {
		r.TTL, r.MaxTTL = 10*time.Minute, time.Hour
	}
	if !r.Source.IsValid() {
		r.Source = netip.MustParseAddr("127.0.0.1")
	}
	r.Subject, r.Job = "repo:acme/app:ref:refs/heads/main", "run-42"
	tok, _, err := h.leases.Issue(context.Background(), r)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// raw sends a request exactly as written (no client-side path cleaning).
func (h *harness) raw(method, target string, hdr map[string]string) (*http.Response, string) {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, h.srv.Listener.Addr())
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	conn.Write([]byte(b.String()))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, target, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func (h *harness) entries() []*audit.Entry {
	h.t.Helper()
	raw, err := h.log.Entries(context.Background(), 0, 10000)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*audit.Entry
	for _, l := range raw {
		e, err := audit.ParseEntry(l)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// waitEntries waits for the async response entries.
func (h *harness) waitEntries(n int) []*audit.Entry {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		es := h.entries()
		if len(es) >= n || time.Now().After(deadline) {
			return es
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) noLeak(where string, s string, tok string) {
	h.t.Helper()
	for _, f := range append(mask.Forms([]byte(testCred)), mask.Forms([]byte(tok))...) {
		if strings.Contains(s, string(f)) {
			h.t.Fatalf("%s leaks %q", where, f)
		}
	}
}

// ---- tests ----

func TestForwardInjectsCredentialAndAudits(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	resp, body := h.raw("GET", "/gw/api/repos/acme/app/issues?state=open&q=a%2Fb", map[string]string{
		"Authorization": "Bearer " + tok, "DPoP": "junk", "Cookie": "a=b"}) // a token elsewhere is refused (TestProtoTokenInContentTypeDropsIt)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	got := h.up.last()
	if got.Path != "/base/repos/acme/app/issues" || got.RawQuery != "state=open&q=a%2Fb" {
		t.Fatalf("upstream saw %q ? %q", got.Path, got.RawQuery)
	}
	if got.Header.Get("Authorization") != "Bearer "+testCred {
		t.Fatalf("credential not injected: %q", got.Header.Get("Authorization"))
	}
	if got.Header.Get("Dpop") != "" || got.Header.Get("Proxy-Authorization") != "" {
		t.Fatalf("token-bearing headers forwarded: %v", got.Header)
	}
	if got.Header.Get("Cookie") != "a=b" {
		t.Fatalf("cookie dropped")
	}
	for k, vs := range got.Header {
		for _, v := range vs {
			if strings.Contains(v, tok) {
				t.Fatalf("upstream saw the job token in %s", k)
			}
		}
	}
	h.noLeak("body", body, tok)
	es := h.waitEntries(2)
	if len(es) != 2 {
		t.Fatalf("want 2 entries, got %d", len(es))
	}
	req, res := es[0], es[1]
	if req.Type != TypeRequest || req.Status != 0 || req.Grant != "read" || req.Upstream != "api" || req.Method != "GET" ||
		req.Path != "/repos/acme/app/issues" || req.Source != "127.0.0.1" || req.Lease == "" || req.Issuer != "ci" ||
		req.Job != "run-42" || req.Secret != "api-token" || req.SecretVersion != 1 {
		t.Fatalf("request entry: %+v", req)
	}
	if res.Type != TypeResponse || res.Status != 200 || res.BytesOut != int64(len(body)) || res.Detail["request_index"] != float64(req.Index) {
		t.Fatalf("response entry: %+v", res)
	}
	raw, _ := h.log.Entries(context.Background(), 0, 10)
	all := string(bytes.Join(raw, nil))
	h.noLeak("audit", all, tok)
	if strings.Contains(all, "state=open") {
		t.Fatal("audit holds the query")
	}
	// metrics
	mfs, _ := h.reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "mayfly_gateway_requests_total" {
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() == 1 && m.GetLabel()[0].GetValue() == "2xx" && m.GetLabel()[1].GetValue() == "api" {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("request not counted in metrics")
	}
}

func TestTokenHeaderForms(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	other := h.issue(lease.Request{Grants: []string{"read"}})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"bearer", map[string]string{"Authorization": "Bearer " + tok}, 200},
		{"bearer lowercase", map[string]string{"Authorization": "bearer " + tok}, 200},
		{"token", map[string]string{"Authorization": "token " + tok}, 200},
		{"dpop scheme, unbound token", map[string]string{"Authorization": "DPoP " + tok}, 200},
		{"basic user", map[string]string{"Authorization": "Basic " + b64(tok+":x-oauth-basic")}, 200},
		{"basic password (git)", map[string]string{"Authorization": "Basic " + b64("x:"+tok)}, 200},
		{"basic unpadded", map[string]string{"Authorization": "Basic " + strings.TrimRight(b64("x:"+tok), "=")}, 200},
		{"proxy bearer", map[string]string{"Proxy-Authorization": "Bearer " + tok}, 200},
		{"proxy basic", map[string]string{"Proxy-Authorization": "Basic " + b64("x:"+tok)}, 200},
		{"both same", map[string]string{"Authorization": "Bearer " + tok, "Proxy-Authorization": "Bearer " + tok}, 200},
		{"none", nil, 401},
		{"both different", map[string]string{"Authorization": "Bearer " + tok, "Proxy-Authorization": "Bearer " + other}, 401},
		{"basic two tokens", map[string]string{"Authorization": "Basic " + b64(tok+":"+other)}, 401},
		{"garbage", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"bad checksum", map[string]string{"Authorization": "Bearer " + badChecksum(tok)}, 401},
		{"unknown well-formed", map[string]string{"Authorization": "Bearer " + mustToken(t)}, 401},
		{"admin token", map[string]string{"Authorization": "Bearer " + mustAdmin(t)}, 401},
		{"no scheme", map[string]string{"Authorization": tok}, 401},
		{"other scheme", map[string]string{"Authorization": "Digest " + tok}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.up.count()
			resp, body := h.raw("GET", "/gw/api/repos/acme/app", tt.hdr)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want != 200 {
				if h.up.count() != before {
					t.Fatal("upstream reached")
				}
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`) || !strings.Contains(body, `"error":"invalid_token"`) {
					t.Fatalf("challenge %q body %s", resp.Header.Get("WWW-Authenticate"), body)
				}
				return
			}
			if got := h.up.last().Header; got.Get("Authorization") != "Bearer "+testCred || got.Get("Proxy-Authorization") != "" {
				t.Fatalf("upstream headers %v", got)
			}
		})
	}
}

func mustToken(t *testing.T) string {
	s, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAdmin(t *testing.T) string {
	s, err := token.New(token.Admin)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPathTricksRefused(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	paths := []string{
		"/gw/api/repos/acme/app/../../admin",
		"/gw/api/repos/acme/app/..",
		"/gw/api/repos/acme/app/%2e%2e/%2e%2e/admin",
		"/gw/api/repos/acme/app/%2E%2E/x",
		"/gw/api/repos/acme/app/%2E./x",
		"/gw/api/repos/acme/app/.%2e/x",
		"/gw/api/repos/acme/app%2f..%2f..%2fadmin",
		"/gw/api/repos/acme/app%2F..%2Fother",
		"/gw/api/repos/acme/app/x%5c..%5c..%5cadmin",
		"/gw/api/repos/acme/app/x\\..\\..\\admin",
		"/gw/api/repos/acme/app/x%00",
		"/gw/api/repos/acme/app/x%00.json",
		"/gw/api/repos/acme/app/x%0d%0aHost:evil",
		"/gw/api/repos/acme/app/x%7f",
		"/gw/api/repos//acme/app/x",
		"/gw/api//repos/acme/app/x",
		"/gw/api/repos/acme/app//x",
		"/gw/api/repos/acme/app/./x",
		"/gw/api/./repos/acme/app/x",
		"/gw/api/repos/acme/app/%c0%ae%c0%ae/x",
		"/gw/api/repos/acme/app/%c0%af",
		"/gw/api/repos/acme/app/%e0%80%ae",
		"/gw/api/repos/acme/app/%252e%252e/x",
		"/gw/api/repos/acme/app/%25",
		"/gw/api/repos/acme/app/x/...",
		"/gw/api/repos/acme/app/x/..;/admin",
		"/gw/api/repos/acme/app/..;/x",
		"/gw/api/repos/acme/app/;/x",
		"/gw/api/repos/acme/app./x",
		"/gw/api/repos/acme/app/x.",
		"/gw/api/repos/acme/app/x%20",
		"/gw/api/repos/acme/app/%ef%bc%8e%ef%bc%8e/x", // full-width dots
		"/gw/api/repos/acme/app/%ef%bc%8fadmin",       // full-width slash
		"/gw/api/repos/acme/app/%e2%80%8b",            // zero-width space
		"/gw/api/repos/acme/app/%zz",
		"/gw/api/repos/acme/app/%4",
		"/gw/api/repos/acme/app/%",
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			before := h.up.count()
			resp, body := h.raw("GET", p, bearer(tok))
			if resp.StatusCode != 400 && resp.StatusCode != 403 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if h.up.count() != before {
				t.Fatalf("upstream reached: %+v", h.up.last())
			}
		})
	}
}

func TestScope(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	tests := []struct {
		method, path string
		want         int
		upPath       string
	}{
		{"GET", "/gw/api/repos/acme/app", 200, "/base/repos/acme/app"},
		{"GET", "/gw/api/repos/acme/app/", 200, "/base/repos/acme/app/"},
		{"GET", "/gw/api/repos/acme/app/contents/a%20b%3Bc", 200, "/base/repos/acme/app/contents/a b;c"},
		{"GET", "/gw/api/repos/acme/app/caf%C3%A9", 200, "/base/repos/acme/app/café"},
		{"GET", "/gw/api/repos/acme/app/%41", 200, "/base/repos/acme/app/A"},
		{"GET", "/gw/api/", 200, "/base/"},
		{"POST", "/gw/api/repos/acme/app/deployments", 200, "/base/repos/acme/app/deployments"},
		{"DELETE", "/gw/api/repos/acme/app/deployments", 403, ""},
		{"POST", "/gw/api/repos/acme/app/deployments/1", 403, ""},
		// GET allows HEAD (what a registry client sends before a pull);
		// nothing else does.
		{"HEAD", "/gw/api/repos/acme/app/x", 200, "/base/repos/acme/app/x"},
		{"HEAD", "/gw/api/repos/acme/other", 403, ""},
		{"HEAD", "/gw/api/upload", 403, ""},
		{"GET", "/gw/api/repos/acme/other", 403, ""},
		{"GET", "/gw/api/repos/acme/app2/x", 403, ""},
		{"GET", "/gw/api/repos/ACME/app/x", 403, ""},
		{"get", "/gw/api/repos/acme/app", 403, ""},
		{"GET", "/gw/slow/slow", 403, ""}, // another upstream, not in this token's grants
		{"GET", "/gw/nosuch/x", 403, ""},
		{"GET", "/gw/", 404, ""},
		{"GET", "/gw/bad%20name/x", 404, ""},
		{"GET", "/other/api/x", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			before := h.up.count()
			resp, body := h.raw(tt.method, tt.path, bearer(tok))
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want != 200 {
				if h.up.count() != before {
					t.Fatal("upstream reached")
				}
				if tt.want == 403 && tt.method != "HEAD" && !strings.Contains(body, "insufficient_scope") {
					t.Fatalf("body %s", body)
				}
				return
			}
			if got := h.up.last(); got.Path != tt.upPath {
				t.Fatalf("upstream path %q (raw %q), want %q", got.Path, got.RequestURI, tt.upPath)
			}
		})
	}
}

func TestTokenStateAndBinding(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	revoked := h.issue(lease.Request{Grants: []string{"read"}})
	if _, _, err := h.leases.RevokeToken(ctx, revoked, "test"); err != nil {
		t.Fatal(err)
	}
	short := h.issue(lease.Request{Grants: []string{"read"}, TTL: time.Minute, MaxTTL: time.Minute})
	wrongAddr := h.issue(lease.Request{Grants: []string{"bound"}, Source: netip.MustParseAddr("10.9.9.9")})
	rightAddr := h.issue(lease.Request{Grants: []string{"bound"}})
	bindLease := h.issue(lease.Request{Grants: []string{"read"}, BindSource: true, Source: netip.MustParseAddr("10.9.9.9")})
	corp := h.issue(lease.Request{Grants: []string{"corp"}})
	once := h.issue(lease.Request{Grants: []string{"read"}, MaxUses: 1})
	otherRepo := h.issue(lease.Request{Grants: []string{"read"}, Claims: map[string]string{"repository": "evil/app"}})

	// Expire "short" only: move the lease clock.
	path := "/gw/api/repos/acme/app"
	check := func(name, tok string, want int, code string) {
		t.Helper()
		before := h.up.count()
		resp, body := h.raw("GET", path, bearer(tok))
		if resp.StatusCode != want || code != "" && !strings.Contains(body, code) {
			t.Fatalf("%s: status %d %s, want %d %s", name, resp.StatusCode, body, want, code)
		}
		if want != 200 && h.up.count() != before {
			t.Fatalf("%s: upstream reached", name)
		}
	}
	check("revoked", revoked, 401, "invalid_token")
	check("wrong address (bind_source_ip grant)", wrongAddr, 403, "access_denied")
	check("right address", rightAddr, 200, "")
	check("wrong address (lease bound)", bindLease, 403, "access_denied")
	check("outside source_cidrs", corp, 403, "access_denied")
	check("identity no longer in policy", otherRepo, 403, "")
	check("first use", once, 200, "")
	check("use limit", once, 401, "invalid_token")
	check("live", short, 200, "")
	h.clk.Add(2 * time.Minute)
	check("expired", short, 401, "invalid_token")

	es := h.waitEntries(1)
	var denials int
	for _, e := range es {
		if e.Type == TypeRequest && e.Status >= 400 {
			denials++
			if e.Check == "" || e.Reason == "" {
				t.Fatalf("denial without check/reason: %+v", e)
			}
		}
	}
	if denials != 7 {
		t.Fatalf("want 7 audited denials, got %d", denials)
	}
}

type downReplay struct{}

func (downReplay) UseJTI(context.Context, string, string, time.Time) (bool, error) {
	return false, errors.New("store down")
}

// unavailable sends req (to a gateway of its own) and wants 503 with the
// upstream never reached.
func (h *harness) unavailable(req *http.Request) {
	h.t.Helper()
	before := h.up.count()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || h.up.count() != before {
		h.t.Fatalf("status %d, upstream reached: %v", resp.StatusCode, h.up.count() != before)
	}
}

// When the lease of a token this node does not hold (another node issued
// it) cannot be read from the store, the request is answered 503, not 401
// as for a bad token, and never forwarded.
func TestTokenLookupStoreDown(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}}) // in h.leases' view only
	hasher, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	other := lease.New(storetest.LeaseReadsDown{DB: h.db}, hasher, lease.Options{Now: h.clk.Now})
	gw, err := New(Config{Leases: other, Policies: h.pol, Secrets: fixedSecrets{testCred}, Auditor: h.aud,
		ClientIP: clientip.New(nil)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/gw/api/repos/acme/app/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	h.unavailable(req)
}

// When the shared DPoP replay store cannot answer, a key-bound request is
// answered 503 and never forwarded.
func TestDPoPReplayStoreDown(t *testing.T) {
	h := newHarness(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jkt, _ := dpop.Thumbprint(&key.PublicKey)
	tok := h.issue(lease.Request{Grants: []string{"read"}, JKT: jkt})
	gw, err := New(Config{Leases: h.leases, Policies: h.pol, Secrets: fixedSecrets{testCred}, Auditor: h.aud,
		ClientIP: clientip.New(nil), DPoP: dpop.NewVerifier(dpop.Options{Shared: downReplay{}})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	u := srv.URL + "/gw/api/repos/acme/app/x"
	proof, _ := dpop.NewProof(key, "GET", u, tok, time.Now())
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "DPoP "+tok)
	req.Header.Set("DPoP", proof)
	h.unavailable(req)
}

func TestDPoP(t *testing.T) {
	h := newHarness(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jkt, err := dpop.Thumbprint(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tok := h.issue(lease.Request{Grants: []string{"read"}, JKT: jkt})
	path := "/gw/api/repos/acme/app/x"
	u := h.srv.URL + path
	proof := func(k *ecdsa.PrivateKey, method, url, at string) string {
		p, err := dpop.NewProof(k, method, url, at, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := proof(key, "GET", u, tok)
	tests := []struct {
		name  string
		proof string
		want  int
	}{
		{"missing", "", 401},
		{"wrong key", proof(other, "GET", u, tok), 401},
		{"wrong method", proof(key, "POST", u, tok), 401},
		{"wrong url", proof(key, "GET", h.srv.URL+"/gw/api/repos/acme/app/y", tok), 401},
		{"no ath", proof(key, "GET", u, ""), 401},
		{"garbage", "a.b.c", 401},
		{"valid", good, 200},
		{"replayed", good, 401},
	}
	for _, tt := range tests {
		before := h.up.count()
		hdr := map[string]string{"Authorization": "DPoP " + tok}
		if tt.proof != "" {
			hdr["DPoP"] = tt.proof
		}
		resp, body := h.raw("GET", path, hdr)
		if resp.StatusCode != tt.want {
			t.Fatalf("%s: status %d: %s", tt.name, resp.StatusCode, body)
		}
		if tt.want == 401 {
			if h.up.count() != before {
				t.Fatalf("%s: upstream reached", tt.name)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "DPoP ") {
				t.Fatalf("%s: challenge %q", tt.name, resp.Header.Get("WWW-Authenticate"))
			}
		} else if h.up.last().Header.Get("Dpop") != "" {
			t.Fatal("DPoP header forwarded")
		}
	}
	// A key-bound token's unknown-token style failures also use the DPoP scheme.
	if _, _, err := h.leases.RevokeToken(context.Background(), tok, "t"); err != nil {
		t.Fatal(err)
	}
	resp, _ := h.raw("GET", path, map[string]string{"Authorization": "DPoP " + tok, "DPoP": proof(key, "GET", u, tok)})
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `DPoP error="invalid_token"`) {
		t.Fatalf("revoked bound token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestResponseNeverLeaks(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	for _, hdr := range []map[string]string{bearer(tok), {"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+tok))}} {
		for _, p := range []string{"/gw/api/echo", "/gw/api/echo-fixed"} { // a token in the URL is refused: TestURLTokenRefused
			resp, body := h.raw("GET", p, hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
			}
			h.noLeak(p+" body", body, tok)
			var hs strings.Builder
			resp.Header.Write(&hs)
			resp.Trailer.Write(&hs)
			h.noLeak(p+" headers", hs.String(), tok)
			if !strings.Contains(body, "***") {
				t.Fatalf("%s: nothing masked: %s", p, body)
			}
			if resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength {
				t.Fatalf("%s: Content-Length %d but %d bytes", p, resp.ContentLength, len(body))
			}
		}
	}
	// An encoding the gateway cannot inspect is refused.
	resp, _ := h.raw("GET", "/gw/api/gzip", bearer(tok))
	if resp.StatusCode != 502 {
		t.Fatalf("uninspectable encoding: %d", resp.StatusCode)
	}
}

func TestLargeBodiesStream(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const size = 64 << 20
	// Upload: a streamed body of unknown length.
	pr, pw := io.Pipe()
	go func() {
		io.Copy(pw, io.LimitReader(&pattern{}, size))
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", h.srv.URL+"/gw/api/upload", pr)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || h.up.last().BodyLen != size {
		t.Fatalf("upload: %d, upstream got %d bytes", resp.StatusCode, h.up.last().BodyLen)
	}
	// Download.
	req, _ = http.NewRequest("GET", h.srv.URL+"/gw/api/big", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hw, hr := sha256.New(), sha256.New()
	n, _ := io.Copy(hw, resp.Body)
	resp.Body.Close()
	io.Copy(hr, io.LimitReader(&pattern{}, size))
	if n != size || !bytes.Equal(hw.Sum(nil), hr.Sum(nil)) {
		t.Fatalf("download: %d bytes, content differs", n)
	}
	es := h.waitEntries(4)
	if es[1].BytesIn != size || es[3].BytesOut != size {
		t.Fatalf("audited bytes: in %d out %d", es[1].BytesIn, es[3].BytesOut)
	}
}

func TestSSEFlushesPromptly(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/sse", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	got := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		br.ReadString('\n')
		got <- line
	}()
	select {
	case l := <-got:
		if l != "data: one\n" {
			t.Fatalf("first event %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first event held back while the upstream is still streaming")
	}
	close(h.up.sse)
	rest, _ := io.ReadAll(br)
	if string(rest) != "data: two\n\n" {
		t.Fatalf("rest %q", rest)
	}
}

// A body of known length that the upstream sends in parts still reaches
// the client part by part: the gateway buffers it for at most its flush
// interval, not until the end.
func TestKnownLengthFlushesPromptly(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/trickle", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	type result struct {
		resp *http.Response
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadFull(resp.Body, make([]byte, 2048))
		}
		got <- result{resp, err}
	}()
	var res result
	select {
	case res = <-got:
	case <-time.After(5 * time.Second):
		close(h.up.sse) // let the upstream finish, so cleanup does not wait
		t.Fatal("the first half held back while the upstream is still sending")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer res.resp.Body.Close()
	close(h.up.sse)
	rest, _ := io.ReadAll(res.resp.Body)
	if len(rest) != 2*4096-2048 || strings.Trim(string(rest), "a") != "" {
		t.Fatalf("rest: %d bytes", len(rest))
	}
}

// An upstream that hangs up in the middle of a body aborts the response
// (the proxy panics with http.ErrAbortHandler): the request is still
// recorded, marked aborted, and the client's connection is cut.
func TestAbortedResponseRecorded(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/abort", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a cut-off body reached the client whole")
	}
	es := h.waitEntries(2)
	if len(es) != 2 {
		t.Fatalf("%d entries, want the decision and the outcome", len(es))
	}
	if out := es[1]; out.Type != TypeResponse || out.Detail["aborted"] != true || out.Status != 200 {
		t.Fatalf("outcome entry %+v", out)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /gw/api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	wsWriteFrame(conn, true, 1, []byte("hello"), true)
	if _, _, msg, err := wsReadFrame(br); err != nil || string(msg) != "HELLO" {
		t.Fatalf("echo %q %v", msg, err)
	}
	// The upstream echoes the credential: the client sees it masked, with
	// the frame's length kept.
	wsWriteFrame(conn, true, 1, []byte("cred"), true)
	_, _, msg, err := wsReadFrame(br)
	if want := "you sent: Bearer " + strings.Repeat("*", len(testCred)); err != nil || string(msg) != want {
		t.Fatalf("credential frame %q %v, want %q", msg, err, want)
	}
	// Cut across frames, with a ping in between.
	wsWriteFrame(conn, true, 1, []byte("split"), true)
	var whole []byte
	for {
		fin, op, msg, err := wsReadFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		if op == 9 {
			continue
		}
		whole = append(whole, msg...)
		if fin {
			break
		}
	}
	if !strings.HasSuffix(string(whole), " ok") || len(whole) != len("you sent: Bearer ")+len(testCred)+3 {
		t.Fatalf("credential split across frames came through as %q", whole)
	}
	for i := 0; i+wsMinTail <= len(testCred); i++ {
		if bytes.Contains(whole, []byte(testCred[i:i+wsMinTail])) {
			t.Fatalf("credential split across frames shows %q: %q", testCred[i:i+wsMinTail], whole)
		}
	}
	if h.up.last().Header.Get("Authorization") != "Bearer "+testCred {
		t.Fatal("credential not injected on upgrade")
	}
	// A frame the gateway cannot inspect (compressed) ends the connection.
	wsWriteFrame(conn, true, 1, []byte("deflate"), true)
	if _, _, msg, err := wsReadFrame(br); err == nil {
		t.Fatalf("a compressed frame came through: %q", msg)
	}
	// Upgrade on a path the token may not use is refused.
	resp2, _ := h.raw("GET", "/gw/api/wsx", map[string]string{"Authorization": "Bearer " + tok, "Upgrade": "websocket", "Connection": "Upgrade"})
	if resp2.StatusCode != 403 {
		t.Fatalf("upgrade on a refused path: %d", resp2.StatusCode)
	}
}

func TestUpstreamFailures(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"other", "down", "tls", "tlsnoca"}})
	start := time.Now()
	resp, body := h.raw("GET", "/gw/slow/slow", bearer(tok))
	if resp.StatusCode != 504 || !strings.Contains(body, "gateway_timeout") || time.Since(start) > 4*time.Second {
		t.Fatalf("slow: %d %s after %v", resp.StatusCode, body, time.Since(start))
	}
	resp, body = h.raw("GET", "/gw/down/anything", bearer(tok))
	if resp.StatusCode != 502 || !strings.Contains(body, "bad_gateway") {
		t.Fatalf("down: %d %s", resp.StatusCode, body)
	}
	h.noLeak("502 body", body, tok)
	resp, body = h.raw("GET", "/gw/tls/x", bearer(tok))
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "tls ok ***") {
		t.Fatalf("tls with ca_file: %d %s", resp.StatusCode, body)
	}
	resp, _ = h.raw("GET", "/gw/tlsnoca/x", bearer(tok))
	if resp.StatusCode != 502 {
		t.Fatalf("tls without the CA must fail verification: %d", resp.StatusCode)
	}
	es := h.waitEntries(8)
	statuses := map[string][]int{}
	for _, e := range es {
		statuses[e.Upstream] = append(statuses[e.Upstream], e.Status)
	}
	if fmt.Sprint(statuses["slow"]) != "[0 504]" || fmt.Sprint(statuses["down"]) != "[0 502]" || fmt.Sprint(statuses["tlsnoca"]) != "[0 502]" {
		t.Fatalf("audited statuses %v", statuses)
	}
}

func TestAuditUnavailableFailsClosed(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	for _, mode := range []int32{1, 2} { // failing, then too slow
		h.aud.mode.Store(mode)
		before := h.up.count()
		resp, body := h.raw("GET", "/gw/api/repos/acme/app", bearer(tok))
		if resp.StatusCode != 503 || h.up.count() != before {
			t.Fatalf("mode %d: status %d %s, upstream reached: %v", mode, resp.StatusCode, body, h.up.count() != before)
		}
		// Refusals cannot go unrecorded either.
		resp, _ = h.raw("GET", "/gw/api/repos/other", bearer(tok))
		if resp.StatusCode != 503 {
			t.Fatalf("mode %d refusal: %d", mode, resp.StatusCode)
		}
	}
	h.aud.mode.Store(0)
	if resp, _ := h.raw("GET", "/gw/api/repos/acme/app", bearer(tok)); resp.StatusCode != 200 {
		t.Fatalf("after recovery: %d", resp.StatusCode)
	}
	// The real log, closed: Append fails.
	h.log.Close(context.Background())
	before := h.up.count()
	if resp, _ := h.raw("GET", "/gw/api/repos/acme/app", bearer(tok)); resp.StatusCode != 503 || h.up.count() != before {
		t.Fatalf("closed log: %d", resp.StatusCode)
	}
}

func TestNoPolicy(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	h.pol.p.Store(nil)
	if resp, _ := h.raw("GET", "/gw/api/repos/acme/app", bearer(tok)); resp.StatusCode != 503 || h.up.count() != 0 {
		t.Fatalf("no policy: %d", resp.StatusCode)
	}
}

// A method override header names the method many upstream frameworks run:
// the policy must allow it as well as the request's method.
func TestMethodOverrideHeaders(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments"
	tests := []struct {
		header, value string
		want          int
	}{
		{"X-HTTP-Method-Override", "DELETE", 403},
		{"X-HTTP-Method-Override", "delete", 403},
		{"X-HTTP-Method", "PUT", 403},
		{"X-Method-Override", "PATCH", 403},
		{"X-HTTP-Method-Override", "POST", 200},
		{"X-HTTP-Method-Override", "GET", 200}, // GET /repos/acme/app/** is allowed too
		{"query", "_method=DELETE", 403},
		{"query", "a=1&_method=delete", 403},
		{"query", "_method=POST", 200},
		{"query", "%5Fmethod=DELETE", 403},
		{"query", "_%6Dethod=PUT", 403},
	}
	for _, tt := range tests {
		t.Run(tt.header+" "+tt.value, func(t *testing.T) {
			before := h.up.count()
			hdr := bearer(tok)
			p := path
			if tt.header == "query" {
				p += "?" + tt.value
			} else {
				hdr[tt.header] = tt.value
			}
			hdr["Content-Length"] = "0"
			resp, body := h.raw("POST", p, hdr)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want != 200 && h.up.count() != before {
				t.Fatalf("upstream reached: %+v", h.up.last())
			}
		})
	}
}

// Rack, Laravel and Symfony take `_method` from a POSTed URL-encoded form
// too: the gateway reads such a body (and forwards it whole) and checks
// the method it names; a form too large to check is refused.
func TestMethodOverrideInFormBody(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments"
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, ctype, body string
		want              int
	}{
		{"delete", form, "ref=main&_method=DELETE", 403},
		{"lower case, first", form, "_method=delete&ref=main", 403},
		{"percent-encoded key", form, "ref=main&%5Fmethod=PUT", 403},
		{"with charset", form + "; charset=utf-8", "_method=PATCH", 403},
		{"allowed override", form, "ref=main&_method=POST", 200},
		{"no override", form, "ref=main&task=deploy", 200},
		{"json", "application/json", `{"_method":"DELETE"}`, 403},
		{"opaque", "application/octet-stream", `_method=DELETE`, 200},
		{"too large to check", form, "a=" + strings.Repeat("x", 1<<20), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.up.count()
			req, _ := http.NewRequest("POST", h.srv.URL+path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", tt.ctype)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, b)
			}
			if tt.want != 200 {
				if h.up.count() != before {
					t.Fatalf("upstream reached: %+v", h.up.last())
				}
				return
			}
			if got := h.up.last(); got.Method != "POST" || got.BodyLen != int64(len(tt.body)) {
				t.Fatalf("upstream got %s with %d body bytes, want POST with %d", got.Method, got.BodyLen, len(tt.body))
			}
		})
	}
}

// Only WebSocket may be upgraded to: an h2c upgrade would leave a raw
// HTTP/2 connection to the upstream on which the client sends requests the
// gateway never checks (h2c smuggling).
func TestUpgradeOnlyWebSocket(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	for _, up := range []string{"h2c", "websocket, h2c", "WebSocket/x"} {
		t.Run(up, func(t *testing.T) {
			before := h.up.count()
			resp, body := h.raw("GET", "/gw/api/ws", map[string]string{"Authorization": "Bearer " + tok,
				"Upgrade": up, "Connection": "Upgrade, HTTP2-Settings", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
			if resp.StatusCode != 400 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if h.up.count() != before {
				t.Fatalf("upstream reached: %+v", h.up.last())
			}
		})
	}
}

// An HTTP/2 upstream may declare Content-Length: 0 and still send
// trailers; they are masked like any other.
func TestTrailersMaskedOnEmptyBody(t *testing.T) {
	h := newHarness(t)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Echo-Trailer")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(200)
		w.Header().Set("X-Echo-Trailer", r.Header.Get("Authorization"))
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600)
	y := `
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  h2:
    url: ` + up.URL + `
    ca_file: ` + ca + `
    credential: {secret: api-token}
grants:
  read:
    upstream: h2
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(y)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	front := httptest.NewUnstartedServer(h.gw)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	req, _ := http.NewRequest("GET", front.URL+"/gw/h2/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	buf := make([]byte, 100)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Echo-Trailer"); !strings.Contains(got, "***") {
		t.Fatalf("trailer %q not masked (proto %s)", got, resp.Proto)
	}
	h.noLeak("trailer", strings.Join(resp.Trailer.Values("X-Echo-Trailer"), ""), tok)
}

// Path-override headers never reach the upstream: it must serve the path
// the policy checked, not one a header names.
func TestPathOverrideHeadersDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	hdr := bearer(tok)
	hdr["X-Original-URL"] = "/admin/delete-everything"
	hdr["X-Rewrite-URL"] = "/admin/delete-everything"
	resp, body := h.raw("GET", "/gw/api/repos/acme/app/issues", hdr)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	got := h.up.last().Header
	if got.Get("X-Original-Url") != "" || got.Get("X-Rewrite-Url") != "" {
		t.Fatalf("path-override header forwarded: %v", got)
	}
}

// wsWriteFrame writes one WebSocket frame; clients mask their frames.
func wsWriteFrame(w io.Writer, fin bool, opcode byte, payload []byte, mask bool) {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
	var mb byte
	if mask {
		mb = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, mb|byte(n))
	case n < 1<<16:
		hdr = append(hdr, mb|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, mb|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	p := bytes.Clone(payload)
	if mask {
		key := []byte{1, 2, 3, 4}
		hdr = append(hdr, key...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	w.Write(append(hdr, p...))
}

// wsReadFrame reads one frame, unmasking a masked one.
func wsReadFrame(r io.Reader) (fin bool, opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	fin, opcode = h[0]&0x80 != 0, h[0]&0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if h[1]&0x80 != 0 {
		if _, err = io.ReadFull(r, key[:]); err != nil {
			return
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return
	}
	if h[1]&0x80 != 0 {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return
}

// The htu a proof must name comes from the server's own address, never from
// the Host header: a proof made for https://evil.example/… and relayed with
// "Host: evil.example" is refused, while a proof for the address the client
// really reached (or localhost on loopback) passes.
func TestDPoPHostIsNotTrusted(t *testing.T) {
	h := newHarness(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jkt, _ := dpop.Thumbprint(&key.PublicKey)
	tok := h.issue(lease.Request{Grants: []string{"read"}, JKT: jkt})
	path := "/gw/api/repos/acme/app/x"
	_, port, _ := net.SplitHostPort(h.srv.Listener.Addr().String())
	tests := []struct {
		name, host, htu string
		want            int
	}{
		{"own address", "", h.srv.URL + path, 200},
		{"localhost on loopback", "localhost:" + port, "http://localhost:" + port + path, 200},
		{"forged host", "evil.example", "http://evil.example" + path, 401},
		{"forged host, our port", "evil.example:" + port, "http://evil.example:" + port + path, 401},
		{"our address, other port", "127.0.0.1:1", "http://127.0.0.1:1" + path, 401},
		{"forged host, proof for our address", "evil.example", h.srv.URL + path, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proof, err := dpop.NewProof(key, "GET", tt.htu, tok, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", h.srv.URL+path, nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			req.Header.Set("Authorization", "DPoP "+tok)
			req.Header.Set("DPoP", proof)
			before := h.up.count()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if reached := h.up.count() != before; reached != (tt.want == 200) {
				t.Fatalf("upstream reached: %v", reached)
			}
		})
	}
}

// rotatedSecrets is a secret just rotated: cur is live, prev is the value
// it replaced, kept (inGrace) or not.
type rotatedSecrets struct {
	cur, prev string
	inGrace   bool
}

func (s rotatedSecrets) Reveal(context.Context, string) ([]byte, int, error) {
	return []byte(s.cur), 2, nil
}

func (s rotatedSecrets) RevealPrevious(context.Context, string) ([]byte, int, error) {
	if !s.inGrace {
		return nil, 0, errors.New("not found")
	}
	return []byte(s.prev), 1, nil
}

// During a rotation's grace period the replaced value may still work
// upstream, so a response that echoes it is masked too.
func TestPreviousValueMaskedDuringGrace(t *testing.T) {
	h := newHarness(t)
	prev := testCred
	cur := "ghp_" + "RotatedCredential0123456789abcdefZZ"
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "old:%s b64:%s now:%s", prev, base64.StdEncoding.EncodeToString([]byte(prev)), r.Header.Get("Authorization"))
	})
	h.up.mu.Unlock()
	tests := []struct {
		name    string
		inGrace bool
		wantOld bool // the old value shows (it is no longer kept, so not known)
	}{
		{"in grace", true, false},
		{"grace over", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw, err := New(Config{Leases: h.leases, Policies: h.pol, Secrets: rotatedSecrets{cur, prev, tt.inGrace}, Auditor: h.aud,
				ClientIP: clientip.New(nil)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(gw.Close)
			srv := httptest.NewServer(gw)
			t.Cleanup(srv.Close)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			req, _ := http.NewRequest("GET", srv.URL+"/gw/api/repos/acme/app/hostile/x", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if strings.Contains(string(b), cur) {
				t.Fatal("the live credential reached the response")
			}
			if got := strings.Contains(string(b), prev); got != tt.wantOld {
				t.Fatalf("old value in the response = %v, want %v: %s", got, tt.wantOld, b)
			}
			if !tt.wantOld && strings.Contains(string(b), base64.StdEncoding.EncodeToString([]byte(prev))) {
				t.Fatal("the old value's base64 reached the response")
			}
		})
	}
}

// badChecksum is tok with its last character changed (to "0", or "1" when
// it already was "0": replacing it by itself left a valid token, 1 in 62).
func badChecksum(tok string) string {
	c := "0"
	if strings.HasSuffix(tok, c) {
		c = "1"
	}
	return tok[:len(tok)-1] + c
}

// TestDoSUnauthenticatedRefusalsUnlimited: each refused gateway request is a
// durable entry in the append-only log, so before a live lease is found
// (nobody is known yet) one address, IPv6 by its /64, may make only
// RefusalBurst of them at once and RefusalRate a second; past that it gets
// 429 with Retry-After, counted in mayfly_gateway_refused_total
// {check="rate_limited"} and recorded nowhere. Without the limit anyone
// who reached the listener grew the log (and disk) at will. Refusals of a
// live token, other addresses and allowed requests are not limited.
func TestDoSUnauthenticatedRefusalsUnlimited(t *testing.T) {
	const burst, n = 20, 100
	tests := []struct {
		name string
		path string
		hdr  func(h *harness) map[string]string
		from func(i int) string
	}{
		{"no token", "/gw/api/echo", nil, func(int) string { return "192.0.2.7" }},
		{"unknown token", "/gw/api/echo", func(*harness) map[string]string { return bearer(mustToken(t)) }, func(int) string { return "192.0.2.7" }},
		{"revoked token", "/gw/api/echo", func(h *harness) map[string]string {
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			if _, _, err := h.leases.RevokeToken(context.Background(), tok, "test"); err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}, func(int) string { return "192.0.2.7" }},
		{"no such route", "/gw/", nil, func(int) string { return "192.0.2.7" }},
		{"no token, one IPv6 /64", "/gw/api/echo", nil, func(i int) string { return fmt.Sprintf("2001:db8:1:2::%x", i+1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarnessWith(t, func(c *Config) {
				// The test's X-Forwarded-For says each request's address.
				c.ClientIP = clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
				c.RefusalRate, c.RefusalBurst = 0.1, burst
			})
			send := func(path, from string, hdr map[string]string) *http.Response {
				req, _ := http.NewRequest("GET", h.srv.URL+path, nil)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				req.Header.Set("X-Forwarded-For", from)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp
			}
			var hdr map[string]string
			if tt.hdr != nil {
				hdr = tt.hdr(h)
			}
			before := len(h.entries())
			limited := 0
			for i := range n {
				resp := send(tt.path, tt.from(i), hdr)
				switch resp.StatusCode {
				case http.StatusTooManyRequests:
					limited++
					if resp.Header.Get("Retry-After") == "" {
						t.Fatal("429 without Retry-After")
					}
				case http.StatusUnauthorized, http.StatusNotFound:
				default:
					t.Fatalf("request %d: %d", i, resp.StatusCode)
				}
			}
			if got := len(h.entries()) - before; got > burst+1 {
				t.Errorf("%d refused requests from one address wrote %d durable audit entries, want at most %d", n, got, burst+1)
			}
			if limited < n-burst-1 {
				t.Errorf("%d of %d answered 429, want at least %d", limited, n, n-burst-1)
			}
			var counted dto.Metric
			h.gw.m.refused.WithLabelValues(CheckRateLimited).Write(&counted)
			if got := int(counted.GetCounter().GetValue()); got != limited {
				t.Errorf("metric counts %d rate-limited refusals, %d were answered", got, limited)
			}
			// Another address is refused and recorded as before.
			if resp := send(tt.path, "198.51.100.9", hdr); resp.StatusCode == http.StatusTooManyRequests {
				t.Error("another address is limited too")
			}
			// A live token from the limited address is served, and its
			// refusals are recorded.
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			if resp := send("/gw/api/repos/acme/app/x", tt.from(0), bearer(tok)); resp.StatusCode != http.StatusOK {
				t.Errorf("a live token's allowed request from the limited address: %d", resp.StatusCode)
			}
			if resp := send("/gw/api/repos/other/x", tt.from(0), bearer(tok)); resp.StatusCode != http.StatusForbidden {
				t.Errorf("a live token's refused request from the limited address: %d, want 403", resp.StatusCode)
			}
			recorded := false
			// Journaled, an entry reaches the store a few ms after the answer.
			for deadline := time.Now().Add(5 * time.Second); !recorded && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				for _, e := range h.entries() {
					recorded = recorded || e.Status == http.StatusForbidden && e.Path == "/repos/other/x"
				}
			}
			if !recorded {
				t.Error("a live token's refusal was not recorded")
			}
		})
	}
}
