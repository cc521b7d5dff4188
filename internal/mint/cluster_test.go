package mint

import (
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// Two nodes on one database, one upstream: a credential is destroyed
// upstream once, not once per node, however the nodes' workers and the
// revocations that mark it (a lease revoked on one node, a credential
// abandoned on another) interleave. Node B's attempt is held inside the
// upstream while node A marks and sweeps.
func TestOneRevocationAcrossNodes(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				// run makes the credential and has both nodes at it.
				run func(t *testing.T, a, bn *harness)
			}{
				{"lease revoked on A while B's worker revokes it", func(t *testing.T, a, bn *harness) {
					a.lease(t, "lse_two_nodes")
					a.mint(t, "lse_two_nodes")
					// The lease ends (expires, or is revoked in the store):
					// B's worker finds the credential due and claims it.
					if _, err := a.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_two_nodes"}, a.clk.Now(), "admin"); err != nil {
						t.Fatal(err)
					}
					a.up.revoking = func() {
						// Meanwhile node A marks the lease's credentials
						// and runs its worker.
						if err := a.m.RevokeLeases(ctx, []string{"lse_two_nodes"}, "admin"); err != nil {
							t.Error(err)
						}
						a.m.RevokeDue(ctx)
					}
					bn.m.RevokeDue(ctx)
				}},
				{"credential abandoned on A while B's worker runs", func(t *testing.T, a, bn *harness) {
					a.lease(t, "lse_abandoned")
					a.up.failMint = Errorf(502, "upstream_refused", "creation SQL failed")
					a.up.revoking = func() {
						// A's own attempt at undoing the half-made
						// credential is under way: B's worker runs.
						bn.m.RevokeDue(ctx)
					}
					if _, err := a.m.Mint(ctx, "lse_abandoned", a.pol.Upstreams["db"], a.pol.Grants["migrate"], a.clk.Now().Add(10*time.Minute)); err == nil {
						t.Fatal("mint did not fail")
					}
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					fresh := storetest.SQLite(t)
					if b.Name != "sqlite" {
						fresh = storetest.Postgres(t)
					}
					a := newHarness(t, fresh)
					bn := otherNode(t, a, fresh.Another(t))
					tc.run(t, a, bn)
					// Both workers, until nothing is due.
					for range 3 {
						a.m.RevokeDue(ctx)
						bn.m.RevokeDue(ctx)
					}
					a.up.mu.Lock()
					n, live := a.up.revokes, len(a.up.live)
					a.up.mu.Unlock()
					if n != 1 || live != 0 {
						t.Fatalf("destroyed upstream %d times (want once), %d left alive", n, live)
					}
				})
			}
		})
	}
}

// otherNode is node B beside node A (a): its own store handle (db) and
// manager; one upstream, one clock and one audit log for both.
func otherNode(t *testing.T, a *harness, db *store.DB) *harness {
	t.Helper()
	bn := *a
	bn.db = db
	cfg := a.m.cfg
	cfg.Store, cfg.Registerer = db, nil
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bn.m = m
	return &bn
}

// A grant's shared credential that node B serves, leaked and reported to
// node A, is no longer injected by node B a second later: B's cache checks
// the record before serving when it has not for a second (it served it
// until a background check, started by the first request after 2 s,
// ended).
func TestSharedCredentialLeakedOnAnotherNode(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			a := newHarness(t, b)
			bn := otherNode(t, a, b.Another(t))
			up, g := a.pol.Upstreams["db"], a.pol.Grants["migrate"]
			leaked, err := bn.m.Shared(ctx, up, g)
			if err != nil {
				t.Fatal(err)
			}
			found, err := a.m.Lookup(ctx, []string{leaked.Secret})
			if err != nil || len(found) != 1 {
				t.Fatalf("lookup on node A: %v, %v", found, err)
			}
			if err := a.m.RevokeRecords(ctx, []store.Minted{found[0].Record}, "leaked"); err != nil {
				t.Fatal(err)
			}
			a.clk.add(time.Second + time.Millisecond)
			is, err := bn.m.Shared(ctx, up, g)
			if err != nil {
				t.Fatal(err)
			}
			if is.ID == leaked.ID {
				t.Fatal("node B still injects the shared credential reported leaked on node A a second before")
			}
		})
	}
}

// A credential whose making outlasts StalePending, so that another node's
// worker takes its record for a crash's and marks it revoked before it
// exists: once made, it is not on record, and this node, holding the only
// material that revokes it, revokes it itself rather than leave it to
// that worker (which is done with it).
func TestMadeAfterAnotherNodeTookItForStale(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			a := newHarness(t, b)
			bn := otherNode(t, a, b.Another(t))
			a.lease(t, "lse_slow")
			a.up.creating = func() {
				a.clk.add(a.m.cfg.StalePending + time.Second)
				bn.m.RevokeDue(ctx)
			}
			if _, err := a.m.Mint(ctx, "lse_slow", a.pol.Upstreams["db"], a.pol.Grants["migrate"], a.clk.Now().Add(10*time.Minute)); err == nil {
				t.Fatal("handed out a credential whose record says revoked")
			}
			a.up.mu.Lock()
			live := len(a.up.live)
			a.up.mu.Unlock()
			if live != 0 {
				t.Fatalf("%d credentials alive upstream that no record stands for", live)
			}
		})
	}
}
