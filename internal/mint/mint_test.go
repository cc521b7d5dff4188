package mint

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

var ctx = context.Background()

// upstreamDouble stands for an outside service that makes and deletes
// credentials: it keeps what exists, and can be told to fail.
type upstreamDouble struct {
	mu         sync.Mutex
	live       map[string]bool // external names that exist upstream
	material   map[string]string
	failMint   error
	failPlan   error
	failRenew  error
	failRevoke int    // the next n revocations fail
	failWith   string // with this text ("upstream down" when empty)
	revokes    int
	renewed    map[string]time.Time
	n          int
	// given is every record Revoke got with material: its params and
	// external name beside the material.
	given []string
	// authed is, by external name, whether the last Revoke got the record
	// as authenticated.
	authed map[string]bool
	// creating, when set, runs once as a credential is being made,
	// before it exists upstream.
	creating func()
	// revoking, when set, runs once as a revocation starts, before it is
	// counted.
	revoking func()
}

func newDouble() *upstreamDouble {
	return &upstreamDouble{live: map[string]bool{}, material: map[string]string{}, renewed: map[string]time.Time{}, authed: map[string]bool{}}
}

func (d *upstreamDouble) Plan(_ context.Context, r Request) (Plan, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failPlan != nil {
		return Plan{}, d.failPlan
	}
	return Plan{Name: "role_" + r.ID[4:12], Params: []byte(`{"db":"x"}`)}, nil
}

func (d *upstreamDouble) Mint(_ context.Context, r Request, p Plan) (Minted, error) {
	d.mu.Lock()
	if f := d.creating; f != nil {
		d.creating = nil
		d.mu.Unlock()
		f()
		d.mu.Lock()
	}
	defer d.mu.Unlock()
	d.n++
	// Created, then maybe refused: a half-made credential.
	d.live[p.Name] = true
	if d.failMint != nil {
		return Minted{}, d.failMint
	}
	v := fmt.Sprintf("planted%s%04d", "secretvalue", d.n)
	d.material[p.Name] = v
	return Minted{Credential: Credential{Password: v, Username: p.Name}, Secret: v, Material: []byte(v), ExpiresAt: r.ExpiresAt}, nil
}

func (d *upstreamDouble) Renew(_ context.Context, rec Record, exp time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failRenew != nil {
		return d.failRenew
	}
	d.renewed[rec.ExternalName] = exp
	return nil
}

func (d *upstreamDouble) Revoke(_ context.Context, rec Record) error {
	d.mu.Lock()
	if f := d.revoking; f != nil {
		d.revoking = nil
		d.mu.Unlock()
		f()
		d.mu.Lock()
	}
	defer d.mu.Unlock()
	d.revokes++
	d.authed[rec.ExternalName] = rec.Authenticated
	if len(rec.Material) > 0 {
		d.given = append(d.given, string(rec.Params)+"|"+rec.ExternalName+"|"+rec.Upstream+"|"+string(rec.Material))
	}
	if d.failRevoke > 0 {
		d.failRevoke--
		if d.failWith != "" {
			return errors.New(d.failWith)
		}
		return errors.New("upstream down")
	}
	if want := d.material[rec.ExternalName]; want != "" && string(rec.Material) != want {
		return errors.New("wrong material")
	}
	delete(d.live, rec.ExternalName)
	return nil
}

func (d *upstreamDouble) exists(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live[name]
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type harness struct {
	db  *store.DB
	m   *Manager
	up  *upstreamDouble
	log *auditlog.Log
	clk *clock
	reg *prometheus.Registry
	pol *policy.Policy
}

const testPolicy = `issuers:
  ci: {url: "http://127.0.0.1:1", audience: x}
upstreams:
  db:
    postgres:
      admin_dsn_secret: admin
      creation: CREATE ROLE "{{name}}" PASSWORD '{{password}}'
      revocation: DROP ROLE "{{name}}"
grants:
  migrate:
    upstream: db
    ttl: 10m
    bind_source_ip: true
    who: [{issuer: ci, claims: {project: x}}]
`

func newHarness(t testing.TB, b storetest.Backend) *harness {
	t.Helper()
	h := &harness{db: b.DB, up: newDouble(), clk: &clock{t: time.Now().UTC()}, reg: prometheus.NewRegistry()}
	hasher, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := audit.GenerateKey("mint.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	h.log, err = auditlog.Open(ctx, b.DB, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.log.Close(context.Background()) })
	h.m, err = New(Config{Store: b.DB, Sources: map[string]Source{policy.KindPostgres: h.up}, Hasher: hasher,
		SealKey: bytes.Repeat([]byte{7}, 32), Audit: h.log, Registerer: h.reg, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.pol, err = policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(testPolicy)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) lease(t *testing.T, id string) {
	t.Helper()
	now := h.clk.Now()
	var hash [32]byte
	copy(hash[:], id)
	if err := h.db.InsertLease(ctx, store.Lease{ID: id, Hash: hash, Issuer: "ci", Subject: "s", Job: "j", Claims: map[string]string{},
		Grants: []string{"migrate"}, IssuedAt: now, ExpiresAt: now.Add(10 * time.Minute), MaxExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) mint(t *testing.T, leaseID string) *Issued {
	t.Helper()
	is, err := h.m.Mint(ctx, leaseID, h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func (h *harness) record(t *testing.T, id string) store.Minted {
	t.Helper()
	ms, err := h.db.MintedDue(ctx, h.clk.Now().Add(100*time.Hour), h.clk.Now().Add(100*time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == id {
			return m
		}
	}
	var m store.Minted
	row := h.db.SQL().QueryRowContext(ctx, h.db.Rebind(`SELECT state, revoke_attempts FROM minted WHERE id = ?`), id)
	if err := row.Scan(&m.State, &m.Attempts); err != nil {
		t.Fatalf("record %s: %v", id, err)
	}
	m.ID = id
	return m
}

func (h *harness) entries(t *testing.T) string {
	t.Helper()
	es, err := h.log.Entries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.Join(es, []byte("\n")))
}

func TestMint(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*testing.T, *harness)
	}{
		{"lifecycle", testLifecycle},
		{"retries until confirmed", testRetries},
		{"failed mint leaves nothing", testFailedMint},
		{"crash between record and create", testStalePending},
		{"expiry", testExpiry},
		{"revocation entries are not lost", testRevocationEntryNotLost},
		{"sealed material is bound to its record", testSealBoundToRecord},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					fresh := storetest.SQLite(t)
					if b.Name != "sqlite" {
						fresh = storetest.Postgres(t)
					}
					tt.fn(t, newHarness(t, fresh))
				})
			}
		})
	}
}

func testLifecycle(t *testing.T, h *harness) {
	h.lease(t, "lse_1")
	is := h.mint(t, "lse_1")
	name := is.Credential.Username
	if !h.up.exists(name) || is.Secret == "" || is.Credential.Password != is.Secret || !is.Credential.ExpiresAt.Equal(h.clk.Now().Add(10*time.Minute)) {
		t.Fatalf("issued %+v", is)
	}
	// Found by keyed hash; nothing else is.
	found, err := h.m.Lookup(ctx, []string{is.Secret, "planted" + "secretvalue9999"})
	if err != nil || len(found) != 1 || found[0].Record.LeaseID != "lse_1" || found[0].Record.ExternalName != name {
		t.Fatalf("lookup = %+v %v", found, err)
	}
	// The lease is alive: nothing is due.
	if n := h.m.RevokeDue(ctx); n != 0 || !h.up.exists(name) {
		t.Fatalf("revoked %d while the lease lives", n)
	}
	// Renewal reaches the source.
	exp := h.clk.Now().Add(20 * time.Minute)
	if err := h.m.Renew(ctx, "lse_1", exp); err != nil || !h.up.renewed[name].Equal(exp) {
		t.Fatalf("renew: %v %v", err, h.up.renewed)
	}
	// The lease ends (any cause): the worker revokes it, with the sealed
	// material opened for the source.
	if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_1"}, h.clk.Now(), "exec ended"); err != nil {
		t.Fatal(err)
	}
	if n := h.m.RevokeDue(ctx); n != 1 || h.up.exists(name) {
		t.Fatalf("revoked %d, still upstream: %v", n, h.up.exists(name))
	}
	if n := h.m.RevokeDue(ctx); n != 0 {
		t.Fatalf("revoked again: %d", n)
	}
	if got := h.counter(t, "mayfly_minted_revocations_total"); got != 1 {
		t.Fatalf("revocations metric %v", got)
	}
	log := h.entries(t)
	if !strings.Contains(log, `"type":"credential.revoke"`) || !strings.Contains(log, `"lease":"lse_1"`) || !strings.Contains(log, `"reason":"lease ended"`) {
		t.Fatalf("audit log lacks the revocation:\n%s", log)
	}
	assertNoValue(t, h, is.Secret, log)
}

func testRetries(t *testing.T, h *harness) {
	h.lease(t, "lse_2")
	is := h.mint(t, "lse_2")
	h.up.failRevoke = 2
	if err := h.m.RevokeLeases(ctx, []string{"lse_2"}, "leaked"); err != nil {
		t.Fatal(err)
	}
	if n := h.m.RevokeDue(ctx); n != 0 {
		t.Fatal("revoked while the upstream is down")
	}
	// Not retried before its backoff.
	h.m.RevokeDue(ctx)
	if h.up.revokes != 1 {
		t.Fatalf("%d attempts before the backoff passed", h.up.revokes)
	}
	h.clk.add(3 * time.Second)
	h.m.RevokeDue(ctx)
	if h.up.revokes != 2 {
		t.Fatalf("%d attempts", h.up.revokes)
	}
	rec := h.record(t, is.ID)
	if rec.Attempts != 2 || rec.State != store.MintRevoking || rec.LastError != "upstream down" || rec.Reason != "leaked" {
		t.Fatalf("after two failures: %+v", rec)
	}
	h.clk.add(10 * time.Second)
	if n := h.m.RevokeDue(ctx); n != 1 || h.up.exists(is.Credential.Username) {
		t.Fatalf("not revoked once the upstream is back: %d", n)
	}
	if got := h.counter(t, "mayfly_minted_revoke_failures_total"); got != 2 {
		t.Fatalf("failure metric %v", got)
	}
	log := h.entries(t)
	if strings.Count(log, `"status":502`) != 2 || !strings.Contains(log, `"reason":"upstream down"`) {
		t.Fatalf("failures not audited:\n%s", log)
	}
}

// refusingLog is the audit log with no room left (a full disk): it
// refuses every entry.
type refusingLog struct{ *auditlog.Log }

func (refusingLog) Add(context.Context, audit.Event) auditlog.Future {
	return auditlog.Answered(0, errors.New("audit: disk full"))
}

func (refusingLog) Record(audit.Event) ([]byte, error) { return nil, errors.New("audit: disk full") }

// A revocation's outcome (credential.revoke, 200 or 502) is written with
// the record of it: when the entry cannot be written, the outcome is not
// recorded either, and the credential stays due until both are. Before,
// the credential was marked revoked (or the failure counted) and the
// entry's failure only logged: it was lost for good.
func testRevocationEntryNotLost(t *testing.T, h *harness) {
	h.lease(t, "lse_e")
	is := h.mint(t, "lse_e")
	if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_e"}, h.clk.Now(), "exec ended"); err != nil {
		t.Fatal(err)
	}
	// A failed attempt while the log refuses: not counted.
	h.m.cfg.Audit = refusingLog{h.log}
	h.up.failRevoke = 1
	h.m.RevokeDue(ctx)
	if rec := h.record(t, is.ID); rec.Attempts != 0 {
		t.Fatalf("a failed attempt was counted without its entry: %+v", rec)
	}
	// A successful one while the log refuses: revoked upstream, but not
	// marked revoked, so it stays due.
	h.clk.add(time.Minute) // past the attempt's claim
	if n := h.m.RevokeDue(ctx); n != 0 || h.up.exists(is.Credential.Username) {
		t.Fatalf("revoked with the log refusing: %d, upstream has it: %v", n, h.up.exists(is.Credential.Username))
	}
	if rec := h.record(t, is.ID); rec.State == store.MintRevoked {
		t.Fatal("marked revoked without its entry")
	}
	if log := h.entries(t); strings.Contains(log, `"type":"credential.revoke"`) {
		t.Fatalf("an entry was written by a refusing log:\n%s", log)
	}
	// The log works again: the next attempt fails upstream and is
	// recorded, the one after succeeds and is recorded.
	h.m.cfg.Audit = h.log
	h.clk.add(time.Minute)
	h.up.failRevoke = 1
	h.m.RevokeDue(ctx)
	h.clk.add(time.Minute)
	if n := h.m.RevokeDue(ctx); n != 1 {
		t.Fatalf("not revoked once the log recovered: %d", n)
	}
	log := h.entries(t)
	if strings.Count(log, `"type":"credential.revoke"`) != 2 || !strings.Contains(log, `"status":502`) || !strings.Contains(log, `"status":200`) {
		t.Fatalf("the outcomes are not both in the log:\n%s", log)
	}
}

// The sealed revocation material (a GitHub installation token) goes to
// where the record's params say (its api_url): a database writer who
// changed them had the material opened and sent to a server of theirs,
// since the seal bound only the record's id. Now it binds everything a
// source reads beside it (kind, upstream, grant, lease, external name,
// params): a changed record does not open, and nothing is sent.
func testSealBoundToRecord(t *testing.T, h *harness) {
	for i, col := range []struct{ name, value string }{
		{"params", `{"db":"attacker.example"}`},
		{"external_name", "role_other"},
		{"upstream", "other"},
		{"grant_name", "other"},
	} {
		lease := fmt.Sprintf("lse_seal%d", i)
		h.lease(t, lease)
		is := h.mint(t, lease)
		q := h.db.Rebind(`UPDATE minted SET ` + col.name + ` = ? WHERE id = ?`)
		var v any = col.value
		if col.name == "params" {
			v = []byte(col.value)
		}
		if _, err := h.db.SQL().ExecContext(ctx, q, v, is.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: lease}, h.clk.Now(), "exec ended"); err != nil {
			t.Fatal(err)
		}
		h.m.RevokeDue(ctx)
		h.up.mu.Lock()
		given := h.up.given
		h.up.given = nil
		h.up.mu.Unlock()
		for _, g := range given {
			if strings.HasSuffix(g, "|"+is.Secret) {
				t.Errorf("%s changed in the database: the material was opened for the changed record (%s)", col.name, strings.TrimSuffix(g, is.Secret))
			}
		}
		if rec := h.record(t, is.ID); rec.State == store.MintRevoked {
			t.Errorf("%s changed in the database: the record was marked revoked", col.name)
		}
	}
	// An unchanged record still opens and is revoked.
	h.lease(t, "lse_seal_ok")
	is := h.mint(t, "lse_seal_ok")
	if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_seal_ok"}, h.clk.Now(), "exec ended"); err != nil {
		t.Fatal(err)
	}
	if n := h.m.RevokeDue(ctx); n != 1 || h.up.exists(is.Credential.Username) {
		t.Fatalf("an unchanged record was not revoked: %d", n)
	}
	// A record an earlier version sealed to its id alone still opens.
	h.lease(t, "lse_seal_v1")
	is = h.mint(t, "lse_seal_v1")
	v1 := h.m.aead.Seal(nil, nil, []byte(is.Secret), []byte("mint:"+is.ID))
	if _, err := h.db.SQL().ExecContext(ctx, h.db.Rebind(`UPDATE minted SET sealed = ? WHERE id = ?`), v1, is.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_seal_v1"}, h.clk.Now(), "exec ended"); err != nil {
		t.Fatal(err)
	}
	if n := h.m.RevokeDue(ctx); n != 1 || h.up.exists(is.Credential.Username) {
		t.Fatalf("a record sealed by an earlier version was not revoked: %d", n)
	}
}

func testFailedMint(t *testing.T, h *harness) {
	h.lease(t, "lse_3")
	h.up.failMint = Errorf(502, "upstream_refused", "creation SQL failed: syntax error")
	_, err := h.m.Mint(ctx, "lse_3", h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(time.Minute))
	var me *Error
	if !errors.As(err, &me) || me.Status != 502 || !strings.Contains(me.Description, "creation SQL failed") {
		t.Fatalf("err = %v", err)
	}
	h.up.mu.Lock()
	left := len(h.up.live)
	h.up.mu.Unlock()
	if left != 0 {
		t.Fatalf("a half-made credential stays upstream: %v", h.up.live)
	}
}

func testStalePending(t *testing.T, h *harness) {
	h.lease(t, "lse_4")
	// What a crash after the record and during creation leaves: a pending
	// row and (maybe) the credential upstream.
	if err := h.db.InsertMinted(ctx, store.Minted{ID: "mnt_crash", LeaseID: "lse_4", Upstream: "db", Grant: "migrate", Kind: policy.KindPostgres,
		ExternalName: "role_crash", State: store.MintPending, CreatedAt: h.clk.Now(), ExpiresAt: h.clk.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	h.up.live["role_crash"] = true
	if n := h.m.RevokeDue(ctx); n != 0 {
		t.Fatal("a fresh pending record was revoked: its exchange may still be running")
	}
	h.clk.add(3 * time.Minute)
	if n := h.m.RevokeDue(ctx); n != 1 || h.up.exists("role_crash") {
		t.Fatalf("stale pending not swept: %d", n)
	}
}

func testExpiry(t *testing.T, h *harness) {
	h.lease(t, "lse_5")
	is := h.mint(t, "lse_5")
	h.clk.add(11 * time.Minute) // past the lease's (and the credential's) expiry
	if n := h.m.RevokeDue(ctx); n != 1 || h.up.exists(is.Credential.Username) {
		t.Fatalf("expired credential not revoked: %d", n)
	}
	if !strings.Contains(h.entries(t), `"reason":"expired"`) {
		t.Fatal("no expiry reason")
	}
}

// assertNoValue searches every row mayfly wrote and the audit log for a
// planted credential value.
func assertNoValue(t *testing.T, h *harness, value, log string) {
	t.Helper()
	if strings.Contains(log, value) {
		t.Fatal("the audit log holds a credential value")
	}
	for _, q := range []string{`SELECT * FROM minted`, `SELECT * FROM leases`} {
		rows, err := h.db.SQL().QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if s := fmt.Sprint(v); strings.Contains(s, value) || bytes.Contains(asBytes(v), []byte(value)) {
					t.Fatalf("%s holds a credential value", q)
				}
			}
		}
		rows.Close()
	}
}

func asBytes(v any) []byte {
	switch x := v.(type) {
	case []byte:
		return x
	case string:
		return []byte(x)
	case sql.RawBytes:
		return x
	}
	return nil
}

// counter reads a counter of the postgres kind from the registry.
func (h *harness) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == policy.KindPostgres {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// The cost a cached shared credential adds to an exchange or a gateway
// call (deliver: gateway).
func BenchmarkSharedCached(b *testing.B) {
	h := newHarness(b, storetest.SQLite(b))
	up, g := h.pol.Upstreams["db"], h.pol.Grants["migrate"]
	if _, err := h.m.Shared(ctx, up, g); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.m.Shared(ctx, up, g); err != nil {
			b.Fatal(err)
		}
	}
}

// blockingExpiry holds SetMintedExpiry until released.
type blockingExpiry struct {
	*store.DB
	entered chan string
	release chan struct{}
}

func (b *blockingExpiry) SetMintedExpiry(ctx context.Context, id string, expires time.Time, n *store.Note) error {
	b.entered <- id
	<-b.release
	return b.DB.SetMintedExpiry(ctx, id, expires, n)
}

// A refreshed shared credential is served only once the one it replaces
// is on record to retire, so that whoever is given the new one finds the
// old one due a minute later (a test that saw the new one and then found
// nothing due failed CI once).
func TestSharedReplacedRetiredFirst(t *testing.T) {
	h := newHarness(t, storetest.SQLite(t))
	bs := &blockingExpiry{DB: h.db, entered: make(chan string, 1), release: make(chan struct{})}
	cfg := h.m.cfg
	cfg.Store, cfg.Registerer = bs, prometheus.NewRegistry()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	up, g := h.pol.Upstreams["db"], h.pol.Grants["migrate"]
	first, err := m.Shared(ctx, up, g)
	if err != nil {
		t.Fatal(err)
	}
	h.clk.add(50 * time.Minute) // 10 minutes left: refreshed in the background
	if is, err := m.Shared(ctx, up, g); err != nil || is.ID != first.ID {
		t.Fatalf("the cached credential must answer while it refreshes: %v", err)
	}
	select {
	case id := <-bs.entered:
		if id != first.ID {
			t.Fatalf("retiring %s, want the replaced %s", id, first.ID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the replaced credential was never retired")
	}
	// The retirement is held: the new credential must not be served yet.
	for range 20 {
		if is, err := m.Shared(ctx, up, g); err != nil || is.ID != first.ID {
			t.Fatalf("served another credential (%v) before the replaced one was on record to retire", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(bs.release)
	var next *Issued
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if next, err = m.Shared(ctx, up, g); err == nil && next.ID != first.ID {
			break
		}
	}
	if next == nil || next.ID == first.ID {
		t.Fatal("the refreshed credential is never served")
	}
	h.clk.add(2 * time.Minute)
	if n := m.RevokeDue(ctx); n != 1 {
		t.Fatalf("RevokeDue = %d right after the new credential was served, want the replaced one", n)
	}
}
