package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// An admin token or a console session ended on one node is refused on
// another node of the cluster by its very next request (no node keeps
// either in memory), and one made on one node works on the others at once.
func TestAdminCredentialsEndOnEveryNode(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// end ends, on node A, the token or session value v names (row
		// is its session); nil: nothing is ended, it must work on B.
		end     func(t *testing.T, a *Admins, s *Sessions, v string, row store.AdminSession, name string)
		session bool
	}{
		{"admin token made on A", nil, false},
		{"admin token revoked by name on A", func(t *testing.T, a *Admins, _ *Sessions, _ string, _ store.AdminSession, name string) {
			if err := a.Revoke(ctx, name, "root", netip.Addr{}); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"admin token revoked by its holder on A", func(t *testing.T, a *Admins, _ *Sessions, v string, _ store.AdminSession, _ string) {
			if ok, err := a.RevokeToken(ctx, v, netip.Addr{}, "holder"); err != nil || !ok {
				t.Fatalf("revoked %v, %v", ok, err)
			}
		}, false},
		{"session made on A", nil, true},
		{"session signed out on A", func(t *testing.T, _ *Admins, s *Sessions, _ string, row store.AdminSession, _ string) {
			if err := s.SignOut(ctx, row, netip.Addr{}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"session revoked by an admin on A", func(t *testing.T, _ *Admins, s *Sessions, _ string, row store.AdminSession, _ string) {
			if err := s.Revoke(ctx, row.ID, "root", netip.Addr{}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"role lowered at a sign-in on A", func(t *testing.T, _ *Admins, s *Sessions, _ string, _ store.AdminSession, name string) {
			if n, err := s.EndStronger(ctx, name, RoleAuditor, netip.Addr{}); err != nil || n != 1 {
				t.Fatalf("ended %d, %v", n, err)
			}
		}, true},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			dbB := b.Another(t)
			recA, recB := newRecorder(t, b.DB), newRecorder(t, dbB)
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					// Each case on its own token name and subject.
					name := fmt.Sprintf("ops%d", i)
					who := SignedIn{Name: "oidc:" + name, Subject: name, Issuer: "https://idp", Role: RoleAdmin}
					adminsA, adminsB := NewAdmins(b.DB, h, recA, nil), NewAdmins(dbB, h, recB, nil)
					sessA, sessB := NewSessions(b.DB, h, recA, nil, time.Hour), NewSessions(dbB, h, recB, nil, time.Hour)
					var v string
					var row store.AdminSession
					if tt.session {
						v, row, err = sessA.Create(ctx, who, ViaBrowser, netip.Addr{})
					} else {
						v, _, err = adminsA.Create(ctx, name, RoleOperator, 0, "root", netip.Addr{})
					}
					if err != nil {
						t.Fatal(err)
					}
					check := func() error {
						if tt.session {
							_, err := sessB.Authenticate(ctx, v)
							return err
						}
						_, err := adminsB.Authenticate(ctx, v)
						return err
					}
					// Node B has seen it work before it ends.
					if err := check(); err != nil {
						t.Fatalf("on node B before it ended: %v", err)
					}
					if tt.end == nil {
						return
					}
					tt.end(t, adminsA, sessA, v, row, name)
					if err := check(); !errors.Is(err, ErrBadCredentials) {
						t.Fatalf("on node B after it ended on node A: %v, want refused", err)
					}
				})
			}
		})
	}
}
