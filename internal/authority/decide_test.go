package authority

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// recorder is the real audit log over the test's store (when log is
// set; else a list in memory) that refuses entries of the types in fail,
// as a log that cannot commit.
type recorder struct {
	mu   sync.Mutex
	evs  []audit.Event
	fail map[string]bool
	log  *auditlog.Log
	db   *store.DB
}

// testAuditKey is one signer key for every log of the tests: nodes that
// share a store share the log's key.
var testAuditKey = sync.OnceValue(func() string {
	key, _, err := audit.GenerateKey("mayfly.test/authority")
	if err != nil {
		panic(err)
	}
	return key
})

func newRecorder(t *testing.T, db *store.DB) *recorder {
	t.Helper()
	l, err := auditlog.Open(context.Background(), db, testAuditKey(), auditlog.Options{Shared: db.Backend() == "postgres"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return &recorder{fail: map[string]bool{}, log: l, db: db}
}

func (r *recorder) refuses(typ string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fail[typ]
}

func (r *recorder) Add(ctx context.Context, ev audit.Event) auditlog.Future {
	if r.refuses(ev.Type) {
		return auditlog.Answered(0, fmt.Errorf("%w: test", failclosed.ErrUnavailable))
	}
	if r.log != nil {
		return r.log.Add(ctx, ev)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	return auditlog.Answered(int64(len(r.evs)), nil)
}

func (r *recorder) Size() int64 { return r.log.Size() }

func (r *recorder) Record(ev audit.Event) ([]byte, error) {
	if r.refuses(ev.Type) {
		return nil, fmt.Errorf("%w: test", failclosed.ErrUnavailable)
	}
	return r.log.Record(ev)
}

func (r *recorder) Settle(ctx context.Context, since int64, note *store.Note) error {
	return r.log.Settle(ctx, since, note)
}

// all returns the entries, in order.
func (r *recorder) all() []audit.Event {
	r.mu.Lock()
	out := append([]audit.Event(nil), r.evs...)
	r.mu.Unlock()
	if r.db == nil {
		return out
	}
	if r.db.Backend() == "postgres" {
		// Shared mode answers an action once its entry is durable, in the
		// pending table; it is in the log once the sequencer has folded it
		// (milliseconds). Read the log after that.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			var n int
			if err := r.db.SQL().QueryRowContext(context.Background(), `SELECT count(*) FROM audit_pending`).Scan(&n); err != nil || n == 0 {
				break
			}
		}
	}
	lines, err := r.db.AuditEntries(context.Background(), 0, 100000)
	if err != nil {
		panic(err)
	}
	for _, line := range lines {
		e, err := audit.ParseEntry(line)
		if err != nil {
			panic(err)
		}
		out = append(out, e.Event)
	}
	return out
}

func (r *recorder) last(typ string) (audit.Event, bool) {
	evs := r.all()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i], true
		}
	}
	return audit.Event{}, false
}

func (r *recorder) count(typ string) int {
	n := 0
	for _, ev := range r.all() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// bench is an Authority over real parts: a dev issuer on loopback, the
// identity verifier, leases in a fresh SQLite store, policy applied as an
// admin would.
type bench struct {
	db     *store.DB
	admins *Admins
	a      *Authority
	m      *lease.Manager
	iss    *devissuer.Issuer
	rec    *recorder
	sec    *vaultSecrets
}

const benchAudience = "https://mayfly.test"

func newBench(t *testing.T) *bench {
	t.Helper()
	return newBenchOn(t, storetest.SQLite(t).DB)
}

// newBenchOn is newBench over db.
func newBenchOn(t *testing.T, db *store.DB) *bench {
	t.Helper()
	iss := devissuertest.Start(t)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(db, h, lease.Options{})
	b := &bench{db: db, m: m, iss: iss, rec: newRecorder(t, db), sec: newVaultSecrets(t, db)}
	b.admins = NewAdmins(db, h, b.rec, nil)
	b.a = New(Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: b.rec, Secrets: b.sec, AdminTokens: b.admins})
	pol := fmt.Sprintf(`issuers:
  ci:
    url: %s
    audience: %s
    algorithms: [%s]
upstreams:
  api:
    url: http://127.0.0.1:2
    credential: {secret: gh}
grants:
  deploy:
    upstream: api
    ttl: 10m
    max_ttl: 1h
    allow: [{methods: [POST], paths: ["/deploy"]}]
    who:
      - issuer: ci
        claims:
          repository: acme/app
          ref: refs/heads/main
  read:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  corp:
    upstream: api
    ttl: 5m
    bind_source_ip: true
    allow: [{methods: [GET], paths: ["/x"]}]
    who: [{issuer: ci, claims: {repository: acme/app}, source_cidrs: [10.0.0.0/8]}]
`, iss.URL(), benchAudience, iss.Algorithm())
	if _, err := b.a.ApplyPolicy(context.Background(), []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bench) mint(t *testing.T, claims map[string]any) string {
	t.Helper()
	tok, err := b.iss.Mint(claims, benchAudience, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var (
	corpAddr  = netip.MustParseAddr("10.1.1.1")
	otherAddr = netip.MustParseAddr("192.0.2.9")
)

// Each exchange is decided by policy.Admit and audited with what the
// client is told: a refusal names the grant and the first unmet claim.
func TestExchangeDecisions(t *testing.T) {
	b := newBench(t)
	main := map[string]any{"repository": "acme/app", "ref": "refs/heads/main"}
	dev := map[string]any{"repository": "acme/app", "ref": "refs/heads/dev"}
	tests := []struct {
		name   string
		claims map[string]any
		raw    string // instead of a minted token
		scope  []string
		ttl    time.Duration
		source netip.Addr
		status int
		code   string
		desc   []string // substrings of the description
		check  string
		detail map[string]any // subset of the audit entry's detail
	}{
		{name: "granted", claims: main, scope: []string{"deploy", "read"}, source: otherAddr, status: 200},
		{name: "wrong ref", claims: dev, scope: []string{"deploy"}, source: otherAddr, status: 400, code: "invalid_scope",
			desc:  []string{`grant "deploy": no who entry matches`, `who[0].claims.ref: expected "refs/heads/main", got "refs/heads/dev"`},
			check: "scope", detail: map[string]any{"reason": "no_who_match", "grant": "deploy", "line": "claims.ref", "got": "refs/heads/dev"}},
		{name: "second grant refused", claims: dev, scope: []string{"read", "deploy"}, source: otherAddr, status: 400, code: "invalid_scope",
			desc: []string{`grant "deploy"`}, check: "scope", detail: map[string]any{"grant": "deploy"}},
		{name: "unknown grant", claims: main, scope: []string{"nope"}, source: otherAddr, status: 400, code: "invalid_scope",
			desc: []string{`grant "nope": unknown grant`}, check: "scope", detail: map[string]any{"reason": "unknown_grant"}},
		{name: "source", claims: main, scope: []string{"corp"}, source: otherAddr, status: 400, code: "invalid_scope",
			desc:  []string{"source address not allowed", `who[0].source_cidrs: expected "10.0.0.0/8", got "192.0.2.9"`},
			check: "source", detail: map[string]any{"reason": "source_not_allowed", "line": "source_cidrs"}},
		{name: "source inside", claims: main, scope: []string{"corp"}, source: corpAddr, status: 200},
		{name: "no scope", claims: main, source: otherAddr, status: 400, code: "invalid_scope", desc: []string{"no grant asked"}},
		{name: "ttl over the grant's", claims: main, scope: []string{"read"}, ttl: time.Hour, source: otherAddr, status: 400, code: "invalid_request", desc: []string{"exceeds"}},
		{name: "not a JWT", raw: "a.b.c", scope: []string{"read"}, source: otherAddr, status: 400, code: "invalid_grant", check: identity.CheckFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if raw == "" {
				raw = b.mint(t, tt.claims)
			}
			before := b.rec.count(audit.TypeExchange)
			res, err := b.a.Exchange(context.Background(), ExchangeRequest{SubjectToken: raw, Scope: tt.scope, TTL: tt.ttl, Source: tt.source})
			if b.rec.count(audit.TypeExchange) != before+1 {
				t.Fatal("not audited exactly once")
			}
			ev, _ := b.rec.last(audit.TypeExchange)
			if ev.Status != tt.status {
				t.Errorf("audited status %d, want %d", ev.Status, tt.status)
			}
			if tt.status == 200 {
				if err != nil || ev.Lease != res.LeaseID {
					t.Fatalf("Exchange = %+v, %v; entry %+v", res, err, ev)
				}
				if k, perr := token.Parse(res.Token); perr != nil || k != token.Job {
					t.Fatalf("Exchange = %+v, %v; entry %+v", res, err, ev)
				}
				return
			}
			var re *Error
			if !errors.As(err, &re) || re.Status != tt.status || re.Code != tt.code {
				t.Fatalf("Exchange error %v, want %d %s", err, tt.status, tt.code)
			}
			for _, s := range tt.desc {
				if !strings.Contains(re.Description, s) {
					t.Errorf("description %q lacks %q", re.Description, s)
				}
			}
			// The entry says what the client was told, and why.
			if ev.Reason != re.Code+": "+re.Description || ev.Check != tt.check {
				t.Errorf("entry reason %q check %q; told %q, want check %q", ev.Reason, ev.Check, re.Description, tt.check)
			}
			for k, want := range tt.detail {
				if got := ev.Detail[k]; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("entry detail %s = %v, want %v (%v)", k, got, want, ev.Detail)
				}
			}
			if strings.Contains(fmt.Sprint(ev), raw) || strings.Contains(re.Error(), raw) {
				t.Error("the ID token is in the entry or the error")
			}
		})
	}
}

// Renewal asks the policy in force (policy.Readmit) with the lease's
// identity, from the renewing address.
func TestRenewDecisions(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	issue := func(claims map[string]string, grants []string, src netip.Addr, bind bool) string {
		if _, ok := claims["iss"]; !ok {
			claims = maps.Clone(claims)
			claims["iss"] = b.iss.URL() // as the exchange records it
		}
		tok, _, err := b.m.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Claims: claims, Grants: grants,
			TTL: time.Minute, MaxTTL: time.Hour, Source: src, BindSource: bind})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	mainClaims := map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}
	tests := []struct {
		name   string
		tok    string
		from   netip.Addr
		status int // 0: renewed
		desc   string
	}{
		{"renewed", issue(mainClaims, []string{"deploy"}, otherAddr, false), otherAddr, 0, ""},
		{"bound, same address", issue(mainClaims, []string{"deploy"}, otherAddr, true), otherAddr, 0, ""},
		{"bound, other address", issue(mainClaims, []string{"deploy"}, otherAddr, true), corpAddr, 403, "bound to the address that exchanged it"},
		{"identity no longer matches", issue(map[string]string{"repository": "acme/app", "ref": "refs/heads/dev"}, []string{"deploy"}, otherAddr, false), otherAddr, 403,
			`grant "deploy": no who entry matches (who[0].claims.ref: expected "refs/heads/main", got "refs/heads/dev")`},
		{"claim the lease lacks", issue(map[string]string{"repository": "acme/app"}, []string{"deploy"}, otherAddr, false), otherAddr, 403,
			"but the ID token has no such claim"},
		{"grant binds, other address", issue(mainClaims, []string{"corp"}, corpAddr, false), netip.MustParseAddr("10.2.2.2"), 403, `grant "corp": source address not allowed`},
		{"issued by the name's earlier issuer", issue(map[string]string{"iss": "https://old-ci.example.com", "repository": "acme/app", "ref": "refs/heads/main"}, []string{"deploy"}, otherAddr, false), otherAddr, 403,
			`grant "deploy": no who entry matches (who[0].issuer: expected "` + b.iss.URL() + `", got "https://old-ci.example.com")`},
		{"grants removed", issue(mainClaims, []string{"gone"}, otherAddr, false), otherAddr, 401, "no grant of this token is in the policy"},
		{"unknown token", "mfy_000000000000000000000000000000000000", otherAddr, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := b.a.Renew(ctx, tt.tok, tt.from)
			if tt.status == 0 {
				if err != nil || l == nil {
					t.Fatalf("Renew: %v", err)
				}
				return
			}
			var re *Error
			if !errors.As(err, &re) || re.Status != tt.status || !strings.Contains(re.Description, tt.desc) {
				t.Fatalf("Renew error %v, want %d containing %q", err, tt.status, tt.desc)
			}
		})
	}
}

// vaultSecrets writes secrets through a real vault on the bench's store,
// as the server's adapter does, so that a change and its Note share one
// transaction.
type vaultSecrets struct{ v *secret.Vault }

func newVaultSecrets(t *testing.T, db *store.DB) *vaultSecrets {
	t.Helper()
	v, err := secret.Open(context.Background(), db, bytes.Repeat([]byte{7}, secret.KeySize), secret.Options{RecordCacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return &vaultSecrets{v: v}
}

func (s *vaultSecrets) Put(ctx context.Context, name string, value []byte, rc *store.RotationChange, n *store.Note) (int, error) {
	return s.v.PutRotating(ctx, name, value, rc, n)
}

func (s *vaultSecrets) Delete(ctx context.Context, name string, n *store.Note) error {
	return s.v.DeleteNoted(ctx, name, n)
}

func (s *vaultSecrets) RotateMasterKey(ctx context.Context, n *store.Note) (int, bool, error) {
	return s.v.RotateMasterKeyNoted(ctx, n)
}

// set stores a secret outside any admin request (no entry).
func (s *vaultSecrets) set(t *testing.T, name, value string) {
	t.Helper()
	if _, err := s.v.Put(context.Background(), name, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

// value is name's live value, "" when there is none.
func (s *vaultSecrets) value(t *testing.T, name string) string {
	t.Helper()
	val, _, err := s.v.Reveal(context.Background(), name)
	if errors.Is(err, secret.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(val)
}

// keyVersion is the newest keyring version.
func (s *vaultSecrets) keyVersion(t *testing.T) int {
	t.Helper()
	st, err := s.v.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Current
}

// Control-plane changes are recorded with them: when the entry cannot be
// made nothing changes and the caller answers 503.
func TestControlPlaneAuditedFirst(t *testing.T) {
	const planted = "s3cr3t-value-planted-9f8e7d"
	src := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name    string
		typ     string
		do      func(b *bench) error
		changed func(b *bench) bool
		entry   func(ev audit.Event) bool
	}{
		{"put", audit.TypeSecretWrite,
			func(b *bench) error {
				_, err := b.a.PutSecret(context.Background(), "alice", src, "gh", []byte(planted))
				return err
			},
			func(b *bench) bool { return b.sec.value(t, "gh") == planted },
			func(ev audit.Event) bool {
				return ev.Admin == "alice" && ev.Secret == "gh" && ev.Source == "127.0.0.1" && ev.Reason == ""
			}},
		{"delete", audit.TypeSecretWrite,
			func(b *bench) error { return b.a.DeleteSecret(context.Background(), "alice", src, "old") },
			func(b *bench) bool { return b.sec.value(t, "old") == "" },
			func(ev audit.Event) bool { return ev.Secret == "old" && ev.Reason == "delete" }},
		{"rotate", audit.TypeKeyRotate,
			func(b *bench) error { _, err := b.a.RotateMasterKey(context.Background(), "alice", src); return err },
			func(b *bench) bool { return b.sec.keyVersion(t) == 2 },
			func(ev audit.Event) bool { return ev.Admin == "alice" }},
	}
	for _, tt := range tests {
		for _, fail := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/audit fails %v", tt.name, fail), func(t *testing.T) {
				b := newBench(t)
				b.sec.set(t, "old", "x")
				b.rec.mu.Lock()
				b.rec.fail[tt.typ] = fail
				b.rec.mu.Unlock()
				err := tt.do(b)
				if fail {
					if !errors.Is(err, failclosed.ErrUnavailable) || tt.changed(b) {
						t.Fatalf("err %v, changed %v: want ErrUnavailable and no change", err, tt.changed(b))
					}
					return
				}
				ev, ok := b.rec.last(tt.typ)
				if err != nil || !tt.changed(b) || !ok || !tt.entry(ev) {
					t.Fatalf("err %v, changed %v, entry %+v", err, tt.changed(b), ev)
				}
				if strings.Contains(fmt.Sprint(b.rec.all()), planted) {
					t.Fatal("a secret value reached the audit log")
				}
			})
		}
	}
}

// A refused control-plane request is recorded, or reported unavailable.
func TestAdminDeny(t *testing.T) {
	for _, fail := range []bool{false, true} {
		rec := &recorder{fail: map[string]bool{TypeAdminDenied: fail}}
		ad := NewAdmins(nil, nil, rec, nil)
		err := ad.Deny(context.Background(), Denial{Admin: "bob", Role: RoleAuditor, Source: otherAddr, Method: "PUT", Path: "/v1/policy", Status: 403, Reason: DeniedRole})
		if fail {
			if !errors.Is(err, failclosed.ErrUnavailable) {
				t.Errorf("audit failing: err %v", err)
			}
			continue
		}
		ev, ok := rec.last(TypeAdminDenied)
		if err != nil || !ok || ev.Admin != "bob" || ev.Role != RoleAuditor || ev.Source != "192.0.2.9" || ev.Status != 403 || ev.Reason != DeniedRole || ev.Path != "/v1/policy" {
			t.Errorf("err %v, entry %+v", err, ev)
		}
	}
}

// An exchange spends its DPoP proof (UseProof) once, after the ID token and
// the policy admitted it and before the lease is issued: an exchange refused
// before that leaves the proof unspent (nobody fills the replay cache
// without an ID token), and a proof refused there issues nothing, is
// audited, and leaves the ID token unspent.
func TestExchangeSpendsProofLast(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	main := map[string]any{"repository": "acme/app", "ref": "refs/heads/main"}
	dev := map[string]any{"repository": "acme/app", "ref": "refs/heads/dev"}
	replayed := &Error{Status: 400, Code: "invalid_dpop_proof", Description: "DPoP proof rejected: replay"}
	tests := []struct {
		name     string
		claims   map[string]any // nil: a garbage ID token
		proofErr error
		calls    int
		status   int  // 0: granted
		unavail  bool // the refusal is the store failing
		check    string
	}{
		{name: "garbage ID token", status: 400, check: identity.CheckFormat},
		{name: "identity not admitted", claims: dev, status: 400, check: "scope"},
		{name: "granted", claims: main, calls: 1},
		{name: "proof replayed", claims: main, proofErr: replayed, calls: 1, status: 400, check: "dpop"},
		{name: "replay store down", claims: main, proofErr: fmt.Errorf("%w: test", failclosed.ErrUnavailable), calls: 1, unavail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := "not.a.jwt"
			if tt.claims != nil {
				raw = b.mint(t, tt.claims)
			}
			calls := 0
			use := func(context.Context) error { calls++; return tt.proofErr }
			res, err := b.a.Exchange(ctx, ExchangeRequest{SubjectToken: raw, Scope: []string{"deploy"}, Source: otherAddr, JKT: "thumb", UseProof: use})
			if calls != tt.calls {
				t.Errorf("proof spent %d times, want %d", calls, tt.calls)
			}
			switch {
			case tt.unavail:
				if !errors.Is(err, failclosed.ErrUnavailable) {
					t.Fatalf("Exchange = %v, want unavailable", err)
				}
			case tt.status == 0:
				if err != nil || res.Token == "" {
					t.Fatalf("Exchange = %+v, %v", res, err)
				}
				return
			default:
				var re *Error
				if !errors.As(err, &re) || re.Status != tt.status {
					t.Fatalf("Exchange = %v, want %d", err, tt.status)
				}
				if ev, _ := b.rec.last(audit.TypeExchange); ev.Status != tt.status || ev.Check != tt.check {
					t.Errorf("entry status %d check %q, want %d %q", ev.Status, ev.Check, tt.status, tt.check)
				}
			}
			if tt.calls == 0 {
				return
			}
			// Nothing was issued: the ID token is still unspent.
			if _, err := b.a.Exchange(ctx, ExchangeRequest{SubjectToken: raw, Scope: []string{"deploy"}, Source: otherAddr}); err != nil {
				t.Errorf("the ID token of an exchange refused for its proof does not exchange again: %v", err)
			}
		})
	}
}
