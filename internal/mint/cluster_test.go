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
				// start makes the credential and returns what node B's
				// worker, held in the upstream, runs against node A.
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
					// Node B: its own store handle and manager; one
					// upstream, one clock and one audit log for both.
					bn := *a
					bn.db = fresh.Another(t)
					cfg := a.m.cfg
					cfg.Store, cfg.Registerer = bn.db, nil
					m, err := New(cfg)
					if err != nil {
						t.Fatal(err)
					}
					bn.m = m
					tc.run(t, a, &bn)
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
