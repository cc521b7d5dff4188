package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/proccpu"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// discardWriter is a ResponseWriter that keeps nothing but its header map.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) Flush()                      {}

// SetWriteDeadline is the server's, which the gateway sets per write.
func (w *discardWriter) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkServeHTTP is the gateway's own work for one allowed request
// (token lookup, checks, audit entry through the journal as the server
// keeps it on SQLite, credential, masking of a small response) with an
// upstream on loopback in the same process; no client connection. Profile
// it with -cpuprofile to see the request path without net/http's server.
func BenchmarkServeHTTP(b *testing.B) {
	ctx := context.Background()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":1,"state":"open","title":"a small issue","body":"`+strings.Repeat("x", 180)+`"}`)
	}))
	defer up.Close()
	db := storetest.SQLite(b).DB
	hasher, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	leases := lease.New(db, hasher, lease.Options{})
	if err := leases.Load(ctx); err != nil {
		b.Fatal(err)
	}
	signer, _, err := audit.GenerateKey("gateway.test/audit")
	if err != nil {
		b.Fatal(err)
	}
	opts := auditlog.Options{}
	if auditlog.JournalSupported() {
		opts.Journal = filepath.Join(b.TempDir(), "journal")
	}
	alog, err := auditlog.Open(ctx, db, signer, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer alog.Close(ctx)
	p, err := policy.Parse([]policy.File{{Name: "policy.yaml", Data: []byte(`
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  api: {url: "` + up.URL + `", credential: {secret: api-token, prefix: "Bearer "}}
grants:
  calls:
    upstream: api
    ttl: 1h
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`)}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	pol := &policyHolder{}
	pol.p.Store(p)
	g, err := New(Config{Leases: leases, Policies: pol, Secrets: fixedSecrets{testCred}, Auditor: alog})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	tok, _, err := leases.Issue(ctx, lease.Request{Issuer: "ci", Claims: map[string]string{"iss": "https://ci.example.com", "repository": "acme/app"},
		Grants: []string{"calls"}, TTL: time.Hour, MaxTTL: time.Hour, Source: netip.MustParseAddr("127.0.0.1"),
		Subject: "repo:acme/app:ref:refs/heads/main", Job: "run-42"})
	if err != nil {
		b.Fatal(err)
	}
	w := &discardWriter{}
	b.ReportAllocs()
	cpu0 := proccpu.Used()
	for b.Loop() {
		r := httptest.NewRequest("GET", "/gw/api/repos/acme/app/issues?state=open", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("Authorization", "Bearer "+tok)
		// As api.ServeHTTP leaves it for the gateway (TLS would add HSTS).
		w.h, w.status = http.Header{"X-Content-Type-Options": {"nosniff"}, "Cache-Control": {"no-store"}}, 0
		g.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	// CPU time, not wall time, is what two builds compare on a busy
	// machine; it counts the upstream and the audit log's committer too.
	b.ReportMetric(float64((proccpu.Used()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
}

// BenchmarkAuditWait is what waiting for an entry the log answers at once
// (a journaled one) costs: with a deadline context made for each wait, and
// with auditCtx, which arms its timer only when something waits on it.
func BenchmarkAuditWait(b *testing.B) {
	parent := context.Background()
	f := auditlog.Answered(1, nil)
	b.Run("WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 5*time.Second)
			f.Wait(ctx)
			cancel()
		}
	})
	b.Run("auditCtx", func(b *testing.B) {
		b.ReportAllocs()
		var rq request
		for b.Loop() {
			rq.audit = auditCtx{}
			rq.audit.init(parent, 5*time.Second)
			f.Wait(&rq.audit)
			rq.audit.stop()
		}
	})
}
