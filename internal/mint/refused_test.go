package mint

import (
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A record whose tag does not verify is refused once and recorded once:
// it is marked refused (the worker skips it from then on) in the
// transaction that writes its one credential.revoke entry. Before, it was
// left due and retried every MaxBackoff at most, each time with a new 502
// entry: whoever could write the database grew the append-only audit log
// without bound. A writer who clears the mark gets one more entry.
func TestRefusedRecordRecordedOnce(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := newHarness(t, b)
			h.lease(t, "lse_r")
			is := h.mint(t, "lse_r")
			if _, err := h.db.SQL().ExecContext(ctx, h.db.Rebind(`UPDATE minted SET params = ? WHERE id = ?`), []byte(`{"db":"elsewhere"}`), is.ID); err != nil {
				t.Fatal(err)
			}
			if err := h.m.RevokeLeases(ctx, []string{"lse_r"}, "revoked"); err != nil {
				t.Fatal(err)
			}
			refusals := func() int {
				return strings.Count(h.entries(t), `"type":"credential.revoke"`)
			}
			for sweep := range 3 {
				if n := h.m.RevokeDue(ctx); n != 0 {
					t.Fatalf("sweep %d revoked %d: a record whose tag fails is never acted on", sweep, n)
				}
				h.clk.add(2 * h.m.cfg.MaxBackoff) // past any backoff and claim
			}
			if got := refusals(); got != 1 {
				t.Fatalf("three sweeps over one refused record wrote %d credential.revoke entries, want 1:\n%s", got, h.entries(t))
			}
			rec, err := h.db.MintedByID(ctx, is.ID)
			if err != nil || rec.State != store.MintRefused || rec.LastError == "" {
				t.Fatalf("refused record: %+v %v; want state %s with its cause", rec, err, store.MintRefused)
			}
			if h.up.revokes != 0 || !h.up.exists(is.Credential.Username) {
				t.Fatalf("the source was called %d times for a refused record", h.up.revokes)
			}
			// A writer clears the mark: one more entry, and marked again.
			if _, err := h.db.SQL().ExecContext(ctx, h.db.Rebind(`UPDATE minted SET state = ? WHERE id = ?`), store.MintRevoking, is.ID); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				h.m.RevokeDue(ctx)
				h.clk.add(2 * h.m.cfg.MaxBackoff)
			}
			if got := refusals(); got != 2 {
				t.Fatalf("after the mark was cleared once: %d entries, want 2", got)
			}
		})
	}
}
