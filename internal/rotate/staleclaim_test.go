package rotate

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// slowAttempts is the vault of a node whose attempts each take long (a
// rotator that runs to its timeout, an upstream that is slow): at each
// attempt's start another node tries to take the secret, and then the
// attempt takes longer than a claim lasts from when it began.
type slowAttempts struct {
	Vault
	db    *store.DB
	clock *clock
	took  time.Duration

	mu     sync.Mutex
	stolen []string
}

func (s *slowAttempts) Reveal(ctx context.Context, name string) ([]byte, int, error) {
	now := s.clock.Now()
	if _, err := s.db.ClaimRotation(ctx, name, "other-node", now, now.Add(time.Hour)); err == nil {
		s.mu.Lock()
		s.stolen = append(s.stolen, name)
		s.mu.Unlock()
	} else if !errors.Is(err, store.ErrConflict) {
		panic(err)
	}
	v, ver, err := s.Vault.Reveal(ctx, name)
	s.clock.add(s.took)
	return v, ver, err
}

// One node rotating several due secrets one after another claims each for
// an attempt's length from when that attempt starts, not from when the
// round began: claimed with the round's start, a later secret's claim had
// run out before its attempt began, and another node rotated it at the
// same time (two rotators making values from one current value, one of
// them thrown away: for many upstreams a credential stored that no longer
// works).
func TestScheduleClaimsFromEachAttempt(t *testing.T) {
	rotator := script(t, `read v; printf 'new-%s' "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"`)
	b := storetest.SQLite(t)
	r := newRig(t, b, map[string][]string{"r": {rotator}}, key(t))
	slow := &slowAttempts{Vault: r.vault, db: r.db, clock: r.clock, took: r.m.claimFor() - time.Second}
	r.m.cfg.Vault = slow
	for _, n := range []string{"s1", "s2", "s3"} {
		r.put(t, n, secretValue(n+"-"), `{"every":"1h","via":{"command":"r"}}`)
	}
	r.clock.add(61 * time.Minute)
	if n, err := r.m.RunDue(ctx); err != nil || n != 3 {
		t.Fatalf("RunDue = %d, %v; want 3 attempts", n, err)
	}
	if len(slow.stolen) > 0 {
		t.Fatalf("another node took %v while this node was about to rotate them", slow.stolen)
	}
}
