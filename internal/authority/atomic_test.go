package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/rotate"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// failWrites makes the store refuse writes of one kind (INSERT, UPDATE)
// to table, from inside the transaction, as a failing disk or a lost
// connection would at that statement; undone at cleanup.
func failWrites(t *testing.T, db *store.DB, table, kind string) {
	t.Helper()
	ctx := context.Background()
	name := "fail_" + table + "_" + strings.ToLower(kind)
	var stmts []string
	if db.Backend() == "postgres" {
		stmts = []string{
			`CREATE FUNCTION ` + name + `() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`,
			`CREATE TRIGGER ` + name + ` BEFORE ` + kind + ` ON ` + table + ` FOR EACH ROW EXECUTE FUNCTION ` + name + `()`,
		}
	} else {
		stmts = []string{`CREATE TRIGGER ` + name + ` BEFORE ` + kind + ` ON ` + table + ` BEGIN SELECT RAISE(ABORT, 'injected failure'); END`}
	}
	for _, q := range stmts {
		if _, err := db.SQL().ExecContext(ctx, q); err != nil {
			t.Fatalf("injecting a failure: %v", err)
		}
	}
	t.Cleanup(func() {
		db.SQL().ExecContext(ctx, `DROP TRIGGER `+name+` ON `+table) // PostgreSQL
		db.SQL().ExecContext(ctx, `DROP TRIGGER `+name)              // SQLite
	})
}

// pendingRows counts audit records written and not yet sequenced.
func pendingRows(t *testing.T, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM audit_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// An action and its audit entry succeed or fail together on every path
// and both backends: when the action's write fails, no entry is made;
// when the entry cannot be written (or made), the action is not applied;
// either way the caller is told "unavailable" (503). When both succeed the
// entry is in the log by the time the caller hears of it.
func TestActionAndEntryTogether(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.1")
	main := map[string]any{"repository": "acme/app", "ref": "refs/heads/main"}
	type fixture struct {
		tok, adminTok string
		leaseID       string
		expires       time.Time
	}
	type path struct {
		name    string
		typ     string // the entry the action writes
		table   string // the action's write, for the injected failure
		kind    string
		do      func(b *bench, f *fixture) error
		applied func(b *bench, f *fixture) bool
	}
	revoked := func(b *bench, f *fixture) bool {
		l, err := b.db.LeaseByID(context.Background(), f.leaseID)
		if err != nil {
			t.Fatal(err)
		}
		_, lerr := b.m.Lookup(ctx, f.tok)
		inView := errors.Is(lerr, lease.ErrRevoked)
		if inView != !l.RevokedAt.IsZero() {
			t.Fatalf("store revoked %v, view revoked %v: they disagree", !l.RevokedAt.IsZero(), inView)
		}
		return inView
	}
	paths := []path{
		{"exchange", audit.TypeExchange, "leases", "INSERT",
			func(b *bench, f *fixture) error {
				res, err := b.a.Exchange(context.Background(), ExchangeRequest{SubjectToken: b.mint(t, main), Scope: []string{"deploy"}, Source: src})
				if err == nil {
					f.leaseID = res.LeaseID
				}
				return err
			},
			func(b *bench, f *fixture) bool {
				ls, err := b.db.ListLeases(context.Background(), store.LeaseFilter{Grant: "deploy"})
				if err != nil {
					t.Fatal(err)
				}
				return len(ls) == 2 // the fixture's and this one
			}},
		{"renewal", audit.TypeRenew, "leases", "UPDATE",
			func(b *bench, f *fixture) error { _, err := b.a.Renew(context.Background(), f.tok, src); return err },
			func(b *bench, f *fixture) bool {
				l, err := b.db.LeaseByID(context.Background(), f.leaseID)
				if err != nil {
					t.Fatal(err)
				}
				return l.ExpiresAt.After(f.expires)
			}},
		{"revoke by holder", audit.TypeRevoke, "leases", "UPDATE",
			func(b *bench, f *fixture) error {
				return b.a.RevokeToken(context.Background(), f.tok, src, "revoked by holder")
			}, revoked},
		{"revoke by admin", audit.TypeRevoke, "leases", "UPDATE",
			func(b *bench, f *fixture) error {
				_, err := b.a.RevokeLeases(context.Background(), store.LeaseFilter{ID: f.leaseID}, "alice", src)
				return err
			}, revoked},
		{"leak report", audit.TypeLeak, "leases", "UPDATE",
			func(b *bench, f *fixture) error {
				_, err := b.a.Leak(context.Background(), []string{f.tok, f.adminTok}, LeakOrigin{Source: "github", URL: "https://example.test/x"}, src)
				return err
			},
			func(b *bench, f *fixture) bool {
				_, aerr := b.admins.Authenticate(context.Background(), f.adminTok)
				if r := revoked(b, f); r != (aerr != nil) {
					t.Fatalf("lease revoked %v, admin token revoked %v: one report, half done", r, aerr != nil)
				}
				return aerr != nil
			}},
		{"admin token revoked by holder", audit.TypeAdminDelete, "admin_tokens", "UPDATE",
			func(b *bench, f *fixture) error {
				return b.a.RevokeToken(context.Background(), f.adminTok, src, "revoked by holder")
			},
			func(b *bench, f *fixture) bool {
				_, err := b.admins.Authenticate(context.Background(), f.adminTok)
				return err != nil
			}},
		{"policy apply", audit.TypePolicy, "policy_versions", "INSERT",
			func(b *bench, f *fixture) error {
				_, err := b.a.ApplyPolicy(context.Background(), []policy.File{{Name: "p.yaml", Data: []byte(withoutGrant(t, b, "deploy"))}}, "alice")
				return err
			},
			func(b *bench, f *fixture) bool {
				v := b.a.PolicyVersion()
				if r := revoked(b, f); r != (v == 2) {
					t.Fatalf("version %d in force, removed grant's token revoked %v", v, r)
				}
				return v == 2
			}},
		{"secret put", audit.TypeSecretWrite, "secrets", "INSERT",
			func(b *bench, f *fixture) error {
				_, err := b.a.PutSecret(context.Background(), "alice", src, "gh", []byte("new"))
				return err
			},
			func(b *bench, f *fixture) bool { return b.sec.value(t, "gh") == "new" }},
		{"secret delete", audit.TypeSecretWrite, "secrets", "UPDATE",
			func(b *bench, f *fixture) error { return b.a.DeleteSecret(context.Background(), "alice", src, "old") },
			func(b *bench, f *fixture) bool { return b.sec.value(t, "old") == "" }},
		{"master-key rotation", audit.TypeKeyRotate, "keyring", "INSERT",
			func(b *bench, f *fixture) error {
				_, err := b.a.RotateMasterKey(context.Background(), "alice", src)
				return err
			},
			func(b *bench, f *fixture) bool { return b.sec.keyVersion(t) == 2 }},
	}
	// A failed write of the vault's is answered as before (its error
	// passes through: 500, or 404 for a delete that finds nothing); only a
	// failure of the entry is the audit log's 503.
	vault := map[string]bool{"secret put": true, "secret delete": true, "master-key rotation": true}
	for _, be := range storetest.Backends(t) {
		for _, p := range paths {
			for _, inject := range []string{"none", "entry refused", "entry write fails", "action write fails"} {
				t.Run(fmt.Sprintf("%s/%s/%s", be.Name, p.name, inject), func(t *testing.T) {
					ctx := context.Background()
					b := newBenchOn(t, fresh(t, be.Name))
					f := &fixture{}
					res, err := b.a.Exchange(ctx, ExchangeRequest{SubjectToken: b.mint(t, main), Scope: []string{"deploy"}, Source: src})
					if err != nil {
						t.Fatal(err)
					}
					f.tok, f.leaseID = res.Token, res.LeaseID
					l, err := b.db.LeaseByID(ctx, f.leaseID)
					if err != nil {
						t.Fatal(err)
					}
					f.expires = l.ExpiresAt
					time.Sleep(2 * time.Millisecond) // so that a renewal extends it
					if f.adminTok, _, err = b.admins.Create(ctx, "ops", RoleOperator, 0, "root", src); err != nil {
						t.Fatal(err)
					}
					b.sec.set(t, "old", "x")
					before := b.rec.done(p.typ)
					switch inject {
					case "entry refused":
						b.rec.mu.Lock()
						b.rec.fail[p.typ] = true
						b.rec.mu.Unlock()
					case "entry write fails":
						failWrites(t, b.db, "audit_pending", "INSERT")
					case "action write fails":
						failWrites(t, b.db, p.table, p.kind)
					}
					err = p.do(b, f)
					applied := p.applied(b, f)
					entries := b.rec.done(p.typ) - before
					if inject == "none" {
						if err != nil || !applied || entries < 1 {
							t.Fatalf("err %v, applied %v, %d new %s entries: want done and recorded", err, applied, entries, p.typ)
						}
						return
					}
					if vault[p.name] && inject == "action write fails" {
						if err == nil || errors.Is(err, failclosed.ErrUnavailable) {
							t.Fatalf("err %v, want the vault's own error", err)
						}
					} else if !errors.Is(err, failclosed.ErrUnavailable) {
						t.Fatalf("err %v, want ErrUnavailable (the caller answers 503)", err)
					}
					if applied {
						t.Fatal("the action was applied while the caller was told it was not")
					}
					if entries != 0 || pendingRows(t, b.db) != 0 {
						t.Fatalf("%d entries and %d pending records of an action that was not applied", entries, pendingRows(t, b.db))
					}
				})
			}
		}
	}
}

// withoutGrant is the bench's policy without grant g.
func withoutGrant(t *testing.T, b *bench, g string) string {
	t.Helper()
	src := string(b.a.Policy().Source)
	out := regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(g)+`:\n(?:    .*\n)*`).ReplaceAllString(src, "")
	if out == src {
		t.Fatalf("no grant %s in the policy", g)
	}
	return out
}

// done counts the entries of typ that record an action done (status
// 200), not a refusal.
func (r *recorder) done(typ string) int {
	n := 0
	for _, ev := range r.all() {
		if ev.Type == typ && ev.Status == 200 {
			n++
		}
	}
	return n
}

// fresh opens a new store on the backend named.
func fresh(t *testing.T, backend string) *store.DB {
	t.Helper()
	if backend == "postgres" {
		storetest.PostgresDSN(t)
		return storetest.Postgres(t).DB
	}
	return storetest.SQLite(t).DB
}

// PUT /v1/secrets/{name} with "rotate" changes the value and the rotation
// under one secret.write entry that names the rotation setting: all three
// commit together. Before, the rotation was written after the value and
// its entry, in a transaction of its own: when that write failed the
// entry claimed a rotation set (or removed) that was not, and the caller
// got a 503 for a value that was stored.
func TestSecretPutRotationAndEntryTogether(t *testing.T) {
	src := netip.MustParseAddr("127.0.0.1")
	const every = `{"every":"24h","via":{"command":"r"}}`
	tests := []struct {
		name    string
		before  string // the rotation the secret has before ("" none)
		rotate  string // the request's "rotate"
		table   string // the write made to fail ("" none)
		kind    string
		applied bool // the value and the rotation change stand
	}{
		{"set", "", every, "", "", true},
		{"set, the rotation's write fails", "", every, "secret_rotations", "INSERT", false},
		{"set, the entry's write fails", "", every, "audit_pending", "INSERT", false},
		{"remove", every, "null", "", "", true},
		{"remove, the rotation's write fails", every, "null", "secret_rotations", "DELETE", false},
		{"remove, the entry's write fails", every, "null", "audit_pending", "INSERT", false},
	}
	for _, be := range storetest.Backends(t) {
		for _, tt := range tests {
			t.Run(be.Name+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				b := newBenchOn(t, fresh(t, be.Name))
				mgr, err := rotate.New(rotate.Config{Store: b.db, Vault: b.sec.v, Audit: b.rec, Rotators: map[string][]string{"r": {"/bin/true"}}})
				if err != nil {
					t.Fatal(err)
				}
				b.a.cfg.Rotations = mgr
				b.sec.set(t, "db", "v1")
				if tt.before != "" {
					if _, err := b.a.PutSecretRotating(ctx, "alice", RoleAdmin, src, "db", []byte("v1"), []byte(tt.before)); err != nil {
						t.Fatal(err)
					}
				}
				entries := b.rec.count(audit.TypeSecretWrite)
				if tt.table != "" {
					failWrites(t, b.db, tt.table, tt.kind)
				}
				_, err = b.a.PutSecretRotating(ctx, "alice", RoleAdmin, src, "db", []byte("v2"), []byte(tt.rotate))
				_, gerr := mgr.Get(ctx, "db")
				rotated := gerr == nil
				value, wrote := b.sec.value(t, "db"), b.rec.count(audit.TypeSecretWrite)-entries
				if (err == nil) != tt.applied {
					t.Fatalf("answer %v, want applied %v", err, tt.applied)
				}
				wantRotated, wantValue, wantEntries := tt.before != "", "v1", 0
				if tt.applied {
					wantRotated, wantValue, wantEntries = tt.rotate != "null", "v2", 1
				}
				if rotated != wantRotated || value != wantValue || wrote != wantEntries {
					t.Fatalf("after the write (err %v): rotated %v, value %q, %d entries; want %v, %q, %d", err, rotated, value, wrote, wantRotated, wantValue, wantEntries)
				}
			})
		}
	}
}
