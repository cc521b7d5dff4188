package lease

import (
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A token whose use limit was reached is refused everywhere: a renewal
// must not extend it (and the credentials minted for its lease) on a node
// that has not seen its last use, any more than on the node that counted
// it.
func TestRenewRefusesALeaseUsedUpOnAnotherNode(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			one := newManager(t, b.DB, c)
			two := newManager(t, b.Another(t), c)
			r := req("deploy")
			r.MaxUses = 1
			tok, _, err := one.Issue(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := one.Lookup(ctx, tok); err != nil {
				t.Fatal(err)
			}
			l2, err := two.Lookup(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			if err := two.Use(ctx, l2); err != nil {
				t.Fatal(err)
			}
			c.Add(time.Minute)
			for _, tc := range []struct {
				name string
				m    *Manager
			}{{"the node that counted the last use", two}, {"another node", one}} {
				before, err := b.DB.LeaseByHash(ctx, l2.hash)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tc.m.Renew(ctx, tok, 10*time.Minute); !errors.Is(err, ErrUsedUp) {
					t.Errorf("%s: renewal of a used-up token: %v, want ErrUsedUp", tc.name, err)
				}
				after, err := b.DB.LeaseByHash(ctx, l2.hash)
				if err != nil {
					t.Fatal(err)
				}
				if !after.ExpiresAt.Equal(before.ExpiresAt) {
					t.Errorf("%s: a used-up lease was extended from %v to %v", tc.name, before.ExpiresAt, after.ExpiresAt)
				}
			}
		})
	}
}
