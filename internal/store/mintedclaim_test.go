package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A credential a node's worker has claimed (ClaimMinted) stays claimed
// when something marks it for revocation meanwhile (its lease revoked, a
// leak report naming it, on any node): it is not due again until the
// claim runs out, so no second node revokes it while the first is at it.
func TestMarkingKeepsAClaim(t *testing.T) {
	marks := []struct {
		name string
		mark func(t *testing.T, db *store.DB, id, leaseID string)
	}{
		{"by id", func(t *testing.T, db *store.DB, id, _ string) {
			if _, err := db.RevokeMinted(ctx, []string{id}, nil, "leaked"); err != nil {
				t.Fatal(err)
			}
		}},
		{"by lease", func(t *testing.T, db *store.DB, _, leaseID string) {
			if _, err := db.RevokeMinted(ctx, nil, []string{leaseID}, "admin"); err != nil {
				t.Fatal(err)
			}
		}},
		{"leak report", func(t *testing.T, db *store.DB, id, _ string) {
			if _, err := db.RevokeLeaked(ctx, store.Leaked{Minted: []string{id}}, time.Now(), "leaked", nil); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			other := b.Another(t)
			now := time.Now().UTC()
			for i, m := range marks {
				t.Run(m.name, func(t *testing.T) {
					id, leaseID := fmt.Sprintf("mnt_claim%d", i), fmt.Sprintf("lse_claim%d", i)
					if err := b.DB.InsertLease(ctx, lease(leaseID, "release")); err != nil {
						t.Fatal(err)
					}
					if err := b.DB.InsertMinted(ctx, minted(id, leaseID, now, now.Add(-time.Second))); err != nil {
						t.Fatal(err)
					}
					if err := b.DB.MintedCreated(ctx, id, nil, []byte("sealed"), now.Add(-time.Second), nil); err != nil {
						t.Fatal(err)
					}
					// Due (expired); node B's worker claims it.
					var rec store.Minted
					ms, err := other.MintedDue(ctx, now, now.Add(-time.Hour), 100)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range ms {
						if r.ID == id {
							rec = r
						}
					}
					if rec.ID == "" {
						t.Fatal("not due")
					}
					if ok, err := other.ClaimMinted(ctx, id, rec.NextAttempt, now.Add(time.Minute)); err != nil || !ok {
						t.Fatalf("claim: %v %v", ok, err)
					}
					m.mark(t, b.DB, id, leaseID)
					for _, d := range due(t, b.DB, now, now.Add(-time.Hour)) {
						if d == id {
							t.Fatal("marked for revocation, the claimed credential is due again for another node while the claim holds")
						}
					}
				})
			}
		})
	}
}
