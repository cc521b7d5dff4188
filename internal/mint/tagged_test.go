package mint

import (
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// Every record carries a tag from its insertion (pending) on, which
// authenticates the fields a source acts on (a PostgreSQL record's admin
// DSN secret and revocation statements, in Params). A source is told
// whether the record it gets is authenticated; a record whose tag does not
// verify is never handed to it; an untagged one (stored before records
// were tagged) is, marked unauthenticated, for the source to act on only
// as the policy says.
func TestRecordsAreTagged(t *testing.T) {
	for _, tc := range []struct {
		name string
		// record makes the record to revoke, and returns its external name
		record      func(t *testing.T, h *harness) string
		revoked     bool
		wantAuthed  bool
		wantAttempt bool // the source is called
	}{
		{"minted", func(t *testing.T, h *harness) string {
			h.lease(t, "lse_a")
			var pendingTag []byte
			h.up.creating = func() {
				recs, err := h.db.MintedByLease(ctx, "lse_a")
				if err != nil || len(recs) != 1 {
					t.Fatalf("pending record: %v %v", recs, err)
				}
				pendingTag = recs[0].Sealed
			}
			is := h.mint(t, "lse_a")
			if len(pendingTag) == 0 {
				t.Fatal("the pending record carries no tag")
			}
			if err := h.m.RevokeLeases(ctx, []string{"lse_a"}, "revoked"); err != nil {
				t.Fatal(err)
			}
			return is.Credential.Username
		}, true, true, true},
		{"untagged, stored by an earlier version", func(t *testing.T, h *harness) string {
			if err := h.db.InsertMinted(ctx, store.Minted{ID: "mnt_legacy", Upstream: "db", Kind: policy.KindPostgres, ExternalName: "role_legacy",
				Params: []byte(`{"db":"x"}`), State: store.MintRevoking, Reason: "revoked", CreatedAt: h.clk.Now(), ExpiresAt: h.clk.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			return "role_legacy"
		}, true, false, true},
		{"fields changed in the store", func(t *testing.T, h *harness) string {
			h.lease(t, "lse_b")
			is := h.mint(t, "lse_b")
			if _, err := h.db.SQL().ExecContext(ctx, h.db.Rebind(`UPDATE minted SET params = ? WHERE id = ?`), []byte(`{"db":"elsewhere"}`), is.ID); err != nil {
				t.Fatal(err)
			}
			if err := h.m.RevokeLeases(ctx, []string{"lse_b"}, "revoked"); err != nil {
				t.Fatal(err)
			}
			return is.Credential.Username
		}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, storetest.SQLite(t))
			name := tc.record(t, h)
			n := h.m.RevokeDue(ctx)
			if got := n == 1; got != tc.revoked {
				t.Fatalf("RevokeDue revoked %d, want revoked %v", n, tc.revoked)
			}
			h.up.mu.Lock()
			authed, called := h.up.authed[name]
			h.up.mu.Unlock()
			if called != tc.wantAttempt || authed != tc.wantAuthed {
				t.Fatalf("source called %v with authenticated %v, want %v and %v", called, authed, tc.wantAttempt, tc.wantAuthed)
			}
		})
	}
}
