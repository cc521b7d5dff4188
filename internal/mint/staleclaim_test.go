package mint

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// slowRevocations is a source whose revocations each take nearly a claim's
// length (an upstream answering at its timeout), while at each one's start
// another node's worker tries to take the very credential being revoked.
type slowRevocations struct {
	Source
	db   *store.DB
	clk  *clock
	took time.Duration

	mu     sync.Mutex
	stolen []string
}

func (s *slowRevocations) Revoke(ctx context.Context, rec Record) error {
	now := s.clk.Now()
	cur, err := s.db.MintedByID(ctx, rec.ID)
	if err != nil {
		return err
	}
	if !cur.NextAttempt.After(now) {
		if ok, err := s.db.ClaimMinted(ctx, rec.ID, cur.NextAttempt, now.Add(time.Minute)); err != nil {
			return err
		} else if ok {
			s.mu.Lock()
			s.stolen = append(s.stolen, rec.ID)
			s.mu.Unlock()
		}
	}
	s.clk.add(s.took)
	return s.Source.Revoke(ctx, rec)
}

// A worker with more due credentials than it revokes at once claims each
// for an attempt's length from when its attempt starts, not from when it
// read them: claimed with the read's time, a credential whose turn came
// after others' slow revocations had a claim that had run out already, and
// another node's worker revoked it at the same time (the same PostgreSQL
// role's sessions terminated and revocation statements run twice at once,
// the same GitHub token deleted twice, two entries for one revocation).
func TestWorkerClaimsFromEachAttempt(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := newHarness(t, b)
			slow := &slowRevocations{Source: h.up, db: h.db, clk: h.clk, took: h.m.cfg.Timeout}
			h.m.cfg.Sources = map[string]Source{policy.KindPostgres: slow}
			h.m.cfg.Parallel = 1
			var leases []string
			for i := range 3 {
				id := fmt.Sprintf("lse_slow_%d", i)
				h.lease(t, id)
				h.mint(t, id)
				leases = append(leases, id)
			}
			if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{Grant: "migrate"}, h.clk.Now(), "admin"); err != nil {
				t.Fatal(err)
			}
			if err := h.m.RevokeLeases(ctx, leases, "admin"); err != nil {
				t.Fatal(err)
			}
			if n := h.m.RevokeDue(ctx); n != 3 {
				t.Fatalf("revoked %d, want 3", n)
			}
			if len(slow.stolen) > 0 {
				t.Fatalf("another node's worker took %v while this one was revoking them", slow.stolen)
			}
		})
	}
}
