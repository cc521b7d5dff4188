package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// listCap is how many sessions the store's listing returns at most
// (ListAdminSessions): EndStronger must not depend on it.
const listCap = 10000

// A sign-in that maps its user to a weaker role ends every stronger live
// session of theirs, however many sessions the node holds: not only those
// among the listing's first listCap (newest first), which left an older
// admin session of a demoted user working. Each is audited once; revoked,
// idle-ended, weaker and other users' sessions are left be.
func TestEndStrongerBeyondListCap(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
			now := t0.Add(-90 * time.Minute)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
			rec := newRecorder(t, b.DB)
			s := NewSessions(b.DB, h, rec, clock, 8*time.Hour)
			create := func(subject, role string) (string, store.AdminSession) {
				t.Helper()
				v, row, err := s.Create(ctx, SignedIn{Name: "oidc:" + subject, Subject: subject, Issuer: "https://idp", Role: role}, ViaBrowser, netip.Addr{})
				if err != nil {
					t.Fatal(err)
				}
				return v, row
			}
			// Unused for admin_session_idle by the time of the sign-in.
			idleV, idleRow := create("u1", RoleAdmin)
			set(t0)
			adminV, adminRow := create("u1", RoleAdmin)
			opV, opRow := create("u1", RoleOperator)
			audV, _ := create("u1", RoleAuditor)
			outV, outRow := create("u1", RoleAdmin)
			if err := s.SignOut(ctx, outRow, netip.Addr{}); err != nil {
				t.Fatal(err)
			}
			otherV, _ := create("u2", RoleAdmin)

			// listCap newer sessions of other users fill the listing (in one
			// transaction: made one by one, they take seconds).
			tx, err := b.DB.SQL().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			ins, err := tx.PrepareContext(ctx, b.DB.Rebind(`INSERT INTO admin_sessions (id, token_hash, name, subject, role, via, source, created_at, expires_at) VALUES (?, ?, 'bulk', ?, ?, ?, '', ?, ?)`))
			if err != nil {
				t.Fatal(err)
			}
			for i := range listCap {
				hash := h.Sum(fmt.Sprintf("bulk-%d", i))
				if _, err := ins.ExecContext(ctx, fmt.Sprintf("ses_bulk%08d", i), hash[:], fmt.Sprintf("bulk-%d", i), RoleAdmin, ViaCLI,
					t0.Add(time.Minute).UnixNano(), t0.Add(8*time.Hour).UnixNano()); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if all, err := b.DB.ListAdminSessions(ctx, t0); err != nil || len(all) != listCap {
				t.Fatalf("setup: the listing holds %d sessions (%v), want its cap %d", len(all), err, listCap)
			}
			set(t0.Add(2 * time.Minute))

			n, err := s.EndStronger(ctx, "u1", RoleAuditor, netip.MustParseAddr("192.0.2.7"))
			if err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Errorf("EndStronger ended %d sessions, want 2 (the admin and the operator one)", n)
			}
			for _, tc := range []struct {
				name  string
				value string
				want  error
			}{
				{"admin", adminV, ErrBadCredentials},
				{"operator", opV, ErrBadCredentials},
				{"auditor", audV, nil},
				{"signed out", outV, ErrBadCredentials},
				{"idle", idleV, ErrExpired},
				{"another user's", otherV, nil},
			} {
				if _, err := s.Authenticate(ctx, tc.value); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
					t.Errorf("%s session: %v, want %v", tc.name, err, tc.want)
				}
			}
			ended := map[string]int{}
			for _, ev := range rec.all() {
				if ev.Type == TypeSessionRevoke && ev.Reason == "role lowered at sign-in" {
					id, _ := ev.Detail["session"].(string)
					ended[id]++
					if ev.Subject != "u1" || ev.Source != "192.0.2.7" || ev.Detail["role_now"] != RoleAuditor {
						t.Errorf("entry %+v", ev)
					}
				}
			}
			if len(ended) != 2 || ended[adminRow.ID] != 1 || ended[opRow.ID] != 1 {
				t.Errorf("admin.session.revoke entries by session %v, want one each for %s and %s (not %s, %s)", ended, adminRow.ID, opRow.ID, outRow.ID, idleRow.ID)
			}

			// Mapped to no role: the rest go; again, nothing is left.
			if n, err := s.EndStronger(ctx, "u1", "", netip.Addr{}); err != nil || n != 1 {
				t.Fatalf("to no role: %d %v, want 1", n, err)
			}
			if _, err := s.Authenticate(ctx, audV); !errors.Is(err, ErrBadCredentials) {
				t.Errorf("auditor session after no role: %v", err)
			}
			if n, err := s.EndStronger(ctx, "u1", "", netip.Addr{}); err != nil || n != 0 {
				t.Fatalf("again: %d %v, want 0", n, err)
			}
		})
	}
}
