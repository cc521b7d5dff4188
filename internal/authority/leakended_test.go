package authority

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A session that admin_session_idle or admin_session_ttl has ended is not
// live: a leak report naming it counts it unknown (as an expired or
// revoked one), rather than saying it revoked a live session, and Holders
// does not return it. One kept in use is still revoked.
func TestLeakSessionEndedByIdleOrTTL(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name    string
				madeTTL time.Duration   // admin_session_ttl when it was made
				ttl     time.Duration   // admin_session_ttl at the report
				uses    []time.Duration // waits, each followed by a use
				wait    time.Duration   // then, before the report
				live    bool
			}{
				{"unused for admin_session_idle", 8 * time.Hour, 8 * time.Hour, nil, time.Hour, false},
				{"unused since its last use for admin_session_idle", 8 * time.Hour, 8 * time.Hour, []time.Duration{50 * time.Minute}, time.Hour, false},
				{"past a lowered admin_session_ttl", 8 * time.Hour, time.Hour, []time.Duration{50 * time.Minute}, 15 * time.Minute, false},
				{"in use", 8 * time.Hour, 8 * time.Hour, []time.Duration{50 * time.Minute}, 50 * time.Minute, true},
				{"in use, within a lowered admin_session_ttl", 8 * time.Hour, 2 * time.Hour, []time.Duration{50 * time.Minute}, 50 * time.Minute, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var mu sync.Mutex
					// The store revokes by the lease manager's clock, the real one:
					// the session's times are set from it.
					now := time.Now().Add(-3 * time.Hour)
					clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
					advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
					rec := newRecorder(t, b.DB)
					made := NewSessions(b.DB, h, rec, clock, tc.madeTTL)
					value, row, err := made.Create(ctx, SignedIn{Name: "alice@example.com", Subject: "alice", Issuer: "https://idp.example", Role: RoleAdmin}, ViaCLI, netip.Addr{})
					if err != nil {
						t.Fatal(err)
					}
					for _, d := range tc.uses {
						advance(d)
						if _, err := made.Authenticate(ctx, value); err != nil {
							t.Fatal(err)
						}
					}
					advance(tc.wait)
					sessions := NewSessions(b.DB, h, rec, clock, tc.ttl)
					_, authErr := sessions.Authenticate(ctx, value)
					if (authErr == nil) != tc.live {
						t.Fatalf("setup: authenticate %v, want live %v", authErr, tc.live)
					}
					held, err := sessions.Holders(ctx, []string{value})
					if err != nil {
						t.Fatal(err)
					}
					if got := held[0].ID == row.ID; got != tc.live {
						t.Errorf("Holders returns the session: %v, want %v (%+v)", got, tc.live, held[0])
					}
					a := New(Config{Leases: lease.New(b.DB, h, lease.Options{}), Verifier: nopVerifier{}, Policies: b.DB, Audit: rec, Sessions: sessions})
					res, err := a.Leak(ctx, []string{value}, LeakOrigin{}, netip.Addr{})
					if err != nil {
						t.Fatal(err)
					}
					revoked := len(res.RevokedSessions) == 1 && res.RevokedSessions[0].ID == row.ID
					if revoked != tc.live || len(res.RevokedSessions) > 1 || res.Unknown != map[bool]int{true: 0, false: 1}[tc.live] {
						t.Fatalf("report %+v, want the session revoked: %v", res, tc.live)
					}
					var entries int
					for _, ev := range rec.all() {
						if ev.Type == TypeSessionRevoke && ev.Detail["session"] == row.ID {
							entries++
						}
					}
					if entries != map[bool]int{true: 1, false: 0}[tc.live] {
						t.Fatalf("%d admin.session.revoke entries for it, want the session revoked: %v", entries, tc.live)
					}
				})
			}
		})
	}
}
