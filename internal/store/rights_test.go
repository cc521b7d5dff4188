package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// The rights a node holds for long (the audit sequencer's session, the
// alerts' and the syslog sinks' exclusive rights) each hold a pooled
// connection. They never take the pool's last one, and exclusive rights
// leave one for the sequencer: with the pool held whole, every read and
// write of the node (a revocation) waited until a right was given up,
// which an exclusive right whose session stays up never is. A budget
// whose pool the sequencer alone fills is refused.
func TestRightsLeaveAConnection(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	type take struct {
		right   string // "seq" or an exclusive right's name
		granted bool
	}
	cases := []struct {
		budget int
		takes  []take
	}{
		{4, []take{{"seq", true}, {"alerts", false}}},                   // a pool of 2
		{4, []take{{"alerts", false}, {"seq", true}}},                   //
		{7, []take{{"alerts", true}, {"sinks", false}, {"seq", true}}},  // a pool of 3
		{8, []take{{"alerts", true}, {"sinks", true}, {"seq", true}}},   // a pool of 4
		{0, []take{{"seq", true}, {"alerts", true}, {"sinks", true}}},   // the default: a pool of 6
		{10, []take{{"alerts", true}, {"sinks", true}, {"seq", true}}},  //
		{8, []take{{"seq", true}, {"alerts", true}, {"sinks", true}}},   //
		{7, []take{{"seq", true}, {"alerts", true}, {"sinks", false}}},  //
		{5, []take{{"seq", true}, {"alerts", false}, {"sinks", false}}}, // an audit writer: a pool of 2
		{6, []take{{"seq", true}, {"alerts", false}}},                   // and a feed reader: a pool of 2
	}
	for _, c := range cases {
		ctx := context.Background()
		db, err := store.Open(ctx, store.Config{PostgresDSN: storetest.FreshSchema(t, dsn), MaxConns: c.budget})
		if err != nil {
			t.Fatalf("budget %d: %v", c.budget, err)
		}
		var release []func()
		// try takes a right, and reports whether it was granted.
		try := func(right string) bool {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var err error
			if right == "seq" {
				var seq *store.AuditSequencer
				if seq, err = db.TryAuditSequencer(tctx); seq != nil {
					release = append(release, func() { seq.Close() })
					return true
				}
			} else {
				var x *store.Exclusive
				if x, err = db.TryExclusive(tctx, right); x != nil {
					release = append(release, func() { x.Release() })
					return true
				}
			}
			if err != nil && !errors.Is(err, store.ErrConnBudget) {
				t.Errorf("budget %d, %v: %s: %v", c.budget, c.takes, right, err)
			}
			return false
		}
		for _, tk := range c.takes {
			if granted := try(tk.right); granted != tk.granted {
				t.Errorf("budget %d, %v: %s granted %v, want %v", c.budget, c.takes, tk.right, granted, tk.granted)
			}
		}
		// With the rights held, the node still revokes and reads.
		done := make(chan error, 1)
		go func() {
			_, err := db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_000000000000000000000000"}, time.Now(), "test")
			if err == nil {
				_, err = db.LeaseByID(ctx, "lse_000000000000000000000000")
				if errors.Is(err, store.ErrNotFound) {
					err = nil
				}
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("budget %d, %v: revoking with the rights held: %v", c.budget, c.takes, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("budget %d, %v: a revocation waited 5 s for a pooled connection the rights held", c.budget, c.takes)
			// Let it finish before the store closes.
			for _, f := range release {
				f()
			}
			release = nil
			if err := <-done; err != nil {
				t.Errorf("budget %d: once the rights were released: %v", c.budget, err)
			}
		}
		for _, f := range release {
			f()
		}
		release = nil
		// Released rights are no longer counted: the same takes get the
		// same answers.
		for _, tk := range c.takes {
			if granted := try(tk.right); granted != tk.granted {
				t.Errorf("budget %d, %v, again: %s granted %v, want %v", c.budget, c.takes, tk.right, granted, tk.granted)
			}
		}
		for _, f := range release {
			f()
		}
		db.Close()
	}
	// The sequencer alone would hold a pool of one whole.
	_, err := store.Open(context.Background(), store.Config{PostgresDSN: storetest.FreshSchema(t, dsn), MaxConns: 3})
	if err == nil {
		t.Errorf("a budget of 3 (a pool of one) was accepted")
	}
}
