package console

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// fakeAuth stands for the server's SSO sessions: one signed-in caller and
// their CSRF token.
type fakeAuth struct {
	who  Caller
	csrf string
}

func (f *fakeAuth) Caller(r *http.Request) (Caller, bool) { return f.who, f.who.Name != "" }
func (f *fakeAuth) CSRFToken(r *http.Request) string      { return f.csrf }
func (f *fakeAuth) CheckCSRF(r *http.Request) bool {
	return subtle.ConstantTimeCompare([]byte(r.PostFormValue(CSRFField)), []byte(f.csrf)) == 1
}
func (f *fakeAuth) SignIn(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

type memSecrets struct{}

func (memSecrets) List(ctx context.Context) ([]SecretMeta, error) {
	return []SecretMeta{{Name: "gh", Version: 1, KeyVersion: 1, CreatedAt: time.Now()}}, nil
}

type bench struct {
	db   *store.DB
	log  *auditlog.Log
	m    *lease.Manager
	a    *authority.Authority
	auth *fakeAuth
	c    *Console
}

const testPolicy = `issuers:
  ci:
    url: https://ci.example
    audience: https://mayfly.test
upstreams:
  api:
    url: http://127.0.0.1:2
    credential: {secret: gh}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [POST], paths: ["/deploy"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  read:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`

// newBench builds a console over a store filled with leases and audit
// entries (before the log opens, so its first checkpoint covers them).
func newBench(tb testing.TB, db *store.DB, leases, entries int) *bench {
	tb.Helper()
	ctx := context.Background()
	fillLeases(tb, db, leases)
	fillAudit(tb, db, entries)
	skey, _, err := audit.GenerateKey("mayfly.test/audit")
	if err != nil {
		tb.Fatal(err)
	}
	log, err := auditlog.Open(ctx, db, skey, auditlog.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { log.Close(context.Background()) })
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		tb.Fatal(err)
	}
	m := lease.New(db, h, lease.Options{})
	if err := m.Load(ctx); err != nil {
		tb.Fatal(err)
	}
	a := authority.New(authority.Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: log, PolicyKey: testPolicyKey})
	if _, err := a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(testPolicy)}}, "test"); err != nil {
		tb.Fatal(err)
	}
	auth := &fakeAuth{who: Caller{Name: "oidc:alice@example.com", Role: authority.RoleAdmin}, csrf: "csrf-" + strings.Repeat("x", 20)}
	c, err := New(Config{Auth: auth, Store: db, Authority: a, Leases: m, Audit: log, Secrets: memSecrets{}, Denials: authority.NewAdmins(db, h, log, nil), NodeID: func() string { return "node-1" }})
	if err != nil {
		tb.Fatal(err)
	}
	return &bench{db: db, log: log, m: m, a: a, auth: auth, c: c}
}

func newTestBench(t *testing.T) *bench {
	return newBench(t, storetest.SQLite(t).DB, 120, 300)
}

// fillLeases inserts n live leases in one transaction: subjects, jobs and
// repositories cycle so that filters select a share of them.
func fillLeases(tb testing.TB, db *store.DB, n int) {
	tb.Helper()
	if n == 0 {
		return
	}
	tx, err := db.SQL().Begin()
	if err != nil {
		tb.Fatal(err)
	}
	st, err := tx.Prepare(db.Rebind(`INSERT INTO leases (id, token_hash, issuer, subject, job, claims, grants, issued_at, expires_at, max_expires_at, source, bind_source, jkt, uses, max_uses, revoked_at, revoke_reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '')`))
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	for i := 0; i < n; i++ {
		repo := fmt.Sprintf("acme/app%d", i%100)
		grant := "read"
		if i%10 == 0 {
			grant = "deploy"
		}
		hash := make([]byte, 32)
		copy(hash, fmt.Sprintf("h%031d", i))
		claims := `{"ref":"refs/heads/main","repository":"` + repo + `"}`
		issued := now.Add(-time.Duration(n-i) * time.Millisecond)
		if _, err := st.Exec(fmt.Sprintf("lse_%08d", i), hash, "https://ci.example", "repo:"+repo+":ref:refs/heads/main",
			fmt.Sprintf("job-%d", i%1000), claims, grant, issued.UnixNano(), now.Add(time.Hour).UnixNano(), now.Add(2*time.Hour).UnixNano(),
			"10.0.0.1", 0, "", 0, 0); err != nil {
			tb.Fatal(err)
		}
	}
	st.Close()
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// fillAudit appends n entries (with their tree hashes) and indexes them:
// mostly gateway requests, every 10th an exchange (every 100th refused),
// every 1000th a leak report.
func fillAudit(tb testing.TB, db *store.DB, n int) {
	tb.Helper()
	ctx := context.Background()
	var hashes []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	ts := audit.FormatTime(time.Now())
	const batch = 5000
	for start := 0; start < n; start += batch {
		var es [][]byte
		var rows []store.AuditIndexRow
		first := int64(len(hashes))
		var hs [][32]byte
		for i := start; i < min(start+batch, n); i++ {
			ev := event(i)
			body, err := audit.EncodeEvent(nil, &ev)
			if err != nil {
				tb.Fatal(err)
			}
			e := audit.AppendEntry(nil, int64(i), ts, body)
			sh, err := tlog.StoredHashes(int64(i), e, r)
			if err != nil {
				tb.Fatal(err)
			}
			hashes = append(hashes, sh...)
			for _, h := range sh {
				hs = append(hs, h)
			}
			es = append(es, e)
			rows = append(rows, store.AuditIndexRow{Index: int64(i), Type: ev.Type, Lease: ev.Lease, Subject: ev.Subject, Upstream: ev.Upstream, Status: ev.Status})
		}
		if err := db.AppendAudit(ctx, int64(start), es, first, hs, store.AuditDurable); err != nil {
			tb.Fatal(err)
		}
		if err := db.IndexAudit(ctx, rows); err != nil {
			tb.Fatal(err)
		}
	}
}

func event(i int) audit.Event {
	lse := fmt.Sprintf("lse_%08d", i/20)
	subj := fmt.Sprintf("repo:acme/app%d:ref:refs/heads/main", (i/20)%100)
	switch {
	case i%1000 == 999:
		return audit.Event{Type: audit.TypeLeak, Source: "10.0.0.9", Count: 4, Status: 200,
			Detail: map[string]any{"report_source": "github", "url": "https://example.com/x", "leases": []string{lse}, "already_revoked": 0, "unknown": 0,
				"admin_tokens": 1, "admin_sessions": 2}}
	case i%100 == 50:
		return audit.Event{Type: audit.TypeExchange, Issuer: "https://ci.example", Subject: subj, Repository: "acme/app", Grant: "deploy",
			Status: 403, Reason: "claim_mismatch", Check: "claims.ref", Source: "10.0.0.1"}
	case i%10 == 0:
		return audit.Event{Type: audit.TypeExchange, Lease: lse, Issuer: "https://ci.example", Subject: subj, Grant: "read", Status: 200, Source: "10.0.0.1"}
	}
	return audit.Event{Type: audit.TypeGateway, Lease: lse, Upstream: fmt.Sprintf("api%d", i%3), Method: "GET", Path: "/v1/items", Status: 200,
		Detail: map[string]any{"decision": "allow"}}
}

// get fetches a page as the bench's caller.
func (b *bench) get(tb testing.TB, path string) *httptest.ResponseRecorder {
	tb.Helper()
	w := httptest.NewRecorder()
	b.c.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

// post sends a form (with the session's CSRF token unless it is set).
func (b *bench) post(tb testing.TB, path string, form url.Values) *httptest.ResponseRecorder {
	tb.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	b.c.ServeHTTP(w, r)
	return w
}

func leaseFilterLive(bn *bench, n int) lease.Filter {
	return lease.Filter{LiveAt: bn.c.cfg.Now(), Limit: n}
}

func leaseCursor(at time.Time, id string) lease.Cursor { return lease.Cursor{IssuedAt: at, ID: id} }
