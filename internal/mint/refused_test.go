package mint

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/policy"
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

// A record without a tag (as records before tagging were, or as a
// database writer leaves one by clearing it) is acted on only as the
// policy says, and its source may refuse it for good (its upstream left
// the policy, its kind unknown here): retried, as an upstream put back
// may yet revoke it, but only its first failed revocation writes an
// entry, whatever the text of the later ones (a text that changes at
// every attempt, an address or a counter in it, must not let a planted
// row write an entry per retry). Its fields are whoever wrote the row's to choose;
// before, planting such rows grew the audit log by one entry per row every
// few minutes, forever, the very thing refusing a record that does not
// verify (above) stopped. A tagged record's every attempt is still
// audited.
func TestUntaggedRecordRepeatedFailureRecordedOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    string
		tagged  bool
		changes bool // the failure's text changes between attempts
		want    int  // credential.revoke entries after four attempts
	}{
		{"untagged, refused by its source", policy.KindPostgres, false, false, 1},
		{"untagged, of a kind this server has no source for", "nosuchkind", false, false, 1},
		{"untagged, failing differently each time", policy.KindPostgres, false, true, 1},
		{"tagged, failing differently each time", policy.KindPostgres, true, true, 4},
		{"tagged: every attempt audited", policy.KindPostgres, true, false, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, storetest.SQLite(t))
			rec := store.Minted{ID: "mnt_untagged", Upstream: "gone", Kind: tc.kind, ExternalName: "role_untagged",
				State: store.MintRevoking, Reason: "revoked", CreatedAt: h.clk.Now(), ExpiresAt: h.clk.Now().Add(time.Hour)}
			if tc.tagged {
				rec.Sealed = h.m.seal(rec, nil)
			}
			if err := h.db.InsertMinted(ctx, rec); err != nil {
				t.Fatal(err)
			}
			for i := range 4 {
				h.up.mu.Lock()
				h.up.failRevoke = 1
				h.up.failWith = "upstream gone is not in the policy: not acted on"
				if tc.changes {
					h.up.failWith = fmt.Sprintf("upstream down (%d)", i)
				}
				h.up.mu.Unlock()
				if n := h.m.RevokeDue(ctx); n != 0 {
					t.Fatalf("attempt %d revoked %d", i, n)
				}
				h.clk.add(2 * h.m.cfg.MaxBackoff)
			}
			if got := strings.Count(h.entries(t), `"type":"credential.revoke"`); got != tc.want {
				t.Fatalf("%d credential.revoke entries after four failed attempts, want %d:\n%s", got, tc.want, h.entries(t))
			}
			if got := h.record(t, rec.ID); got.Attempts != 4 || got.State != store.MintRevoking {
				t.Fatalf("record after four failed attempts: %+v; want four counted, still revoking", got)
			}
			if got := h.counter(t, "mayfly_minted_revoke_failures_total"); tc.kind == policy.KindPostgres && got != 4 {
				t.Fatalf("failure metric %v, want 4", got)
			}
		})
	}
}
