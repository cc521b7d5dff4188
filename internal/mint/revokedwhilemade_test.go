package mint

import (
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A lease revoked while its credential is being made, the worker running
// meanwhile (it used to "revoke" the credential then, before it existed
// upstream, and record it revoked): once made, the credential is revoked,
// retried until the upstream confirms however the first attempt fails,
// never left alive upstream with a record that says revoked.
func TestCredentialMadeAfterItsLeaseWasRevoked(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := newHarness(t, b)
			h.lease(t, "lse_made_late")
			h.up.creating = func() {
				if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_made_late"}, h.clk.Now(), "admin"); err != nil {
					t.Error(err)
				}
				if err := h.m.RevokeLeases(ctx, []string{"lse_made_late"}, "admin"); err != nil {
					t.Error(err)
				}
				h.m.RevokeDue(ctx) // the worker runs meanwhile
				h.up.mu.Lock()
				h.up.failRevoke = 1 // the next attempt, once it exists, fails
				h.up.mu.Unlock()
			}
			h.m.Mint(ctx, "lse_made_late", h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(10*time.Minute))
			var name string
			h.up.mu.Lock()
			for n := range h.up.live {
				name = n
			}
			h.up.mu.Unlock()
			for i := 0; i < 5 && name != "" && h.up.exists(name); i++ {
				h.clk.add(10 * time.Minute) // past any backoff
				h.m.RevokeDue(ctx)
			}
			if name != "" && h.up.exists(name) {
				t.Fatalf("credential %s made after its lease was revoked is alive upstream, and nothing will revoke it", name)
			}
		})
	}
}
