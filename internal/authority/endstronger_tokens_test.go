package authority

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A sign-in that maps its user to a weaker role also revokes the live
// admin tokens of a stronger role that user made (CreateBy), on both
// backends: the role a token was made with is the maker's, and goes with
// it. Tokens of the role kept, other users', ones no human made, a name
// revoked and reused by another user, and expired ones are left be; each
// revoked token is audited once.
func TestEndStrongerEndsTokensMade(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			now := time.Now().Add(-time.Hour).Truncate(time.Second)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			rec := newRecorder(t, b.DB)
			s := NewSessions(b.DB, h, rec, clock, 8*time.Hour)
			admins := NewAdmins(b.DB, h, rec, clock)
			mk := func(name, role, creator string, ttl time.Duration) string {
				t.Helper()
				tok, _, err := admins.CreateBy(ctx, name, role, ttl, "oidc:"+creator, creator, netip.Addr{})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}
			toks := map[string]string{
				"u1-admin":    mk("u1-admin", RoleAdmin, "u1", 0),
				"u1-operator": mk("u1-operator", RoleOperator, "u1", 0),
				"u1-auditor":  mk("u1-auditor", RoleAuditor, "u1", 0),
				"u1-expired":  mk("u1-expired", RoleAdmin, "u1", time.Minute),
				"u2-admin":    mk("u2-admin", RoleAdmin, "u2", 0),
				"nobody":      mk("nobody", RoleAdmin, "", 0),
			}
			mk("reused", RoleAdmin, "u1", 0)
			if err := admins.Revoke(ctx, "reused", "root", netip.Addr{}); err != nil {
				t.Fatal(err)
			}
			toks["reused"] = mk("reused", RoleAdmin, "u2", 0)
			mu.Lock()
			now = now.Add(2 * time.Minute)
			mu.Unlock()

			if _, err := s.EndStronger(ctx, "u1", RoleAuditor, netip.MustParseAddr("192.0.2.7")); err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string]error{
				"u1-admin": ErrBadCredentials, "u1-operator": ErrBadCredentials, "u1-auditor": nil,
				"u1-expired": ErrExpired, "u2-admin": nil, "nobody": nil, "reused": nil,
			} {
				if _, err := admins.Authenticate(ctx, toks[name]); !errors.Is(err, want) || (want == nil) != (err == nil) {
					t.Errorf("token %s: %v, want %v", name, err, want)
				}
			}
			ended := map[string]int{}
			for _, ev := range rec.all() {
				if ev.Type == audit.TypeAdminDelete && ev.Reason == ReasonCreatorLowered {
					name, _ := ev.Detail["name"].(string)
					ended[name]++
					if ev.Subject != "u1" || ev.Source != "192.0.2.7" || ev.Detail["role_now"] != RoleAuditor {
						t.Errorf("entry %+v", ev)
					}
				}
			}
			if len(ended) != 2 || ended["u1-admin"] != 1 || ended["u1-operator"] != 1 {
				t.Errorf("admin.token.delete entries by name %v, want one each for u1-admin and u1-operator", ended)
			}
			// To no role: the last one goes.
			if _, err := s.EndStronger(ctx, "u1", "", netip.Addr{}); err != nil {
				t.Fatal(err)
			}
			if _, err := admins.Authenticate(ctx, toks["u1-auditor"]); !errors.Is(err, ErrBadCredentials) {
				t.Errorf("u1-auditor after no role: %v", err)
			}
		})
	}
}
