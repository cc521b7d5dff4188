package authority

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// An admin token works until its expiry and is refused from that moment
// with ErrExpired (an ErrBadCredentials); creation takes the default
// lifetime, refuses one past the maximum or under a second, and records
// the expiry in the audit entry; each use is recorded at most once a
// minute. On both stores.
func TestAdminTokenExpiry(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		ttl        time.Duration
		maxTTL     time.Duration // 0: the default maximum
		wantStatus int           // refusal status; 0: created
		wantLife   time.Duration
	}{
		{"default", 0, 0, 0, DefaultAdminTTL},
		{"one hour", time.Hour, 0, 0, time.Hour},
		{"the default maximum", DefaultAdminMaxTTL, 0, 0, DefaultAdminMaxTTL},
		{"past the default maximum", DefaultAdminMaxTTL + time.Second, 0, 400, 0},
		{"a configured maximum", 2 * time.Hour, time.Hour, 400, 0},
		{"the default, a shorter maximum", 0, 24 * time.Hour, 0, 24 * time.Hour},
		{"under a second", time.Millisecond, 0, 400, 0},
		{"negative", -time.Hour, 0, 400, 0},
	}
	for _, tt := range tests {
		for _, b := range storetest.Backends(t) {
			t.Run(tt.name+"/"+b.Name, func(t *testing.T) {
				db := b.DB
				h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
				if err != nil {
					t.Fatal(err)
				}
				var mu sync.Mutex
				now := start
				clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
				advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
				rec := newRecorder(t, db)
				admins := NewAdmins(db, h, rec, clock)
				admins.LimitTTL(tt.maxTTL)
				tok, expires, err := admins.Create(ctx, "ops", RoleOperator, tt.ttl, "root", netip.Addr{})
				if tt.wantStatus != 0 {
					var r *Error
					if !errors.As(err, &r) || r.Status != tt.wantStatus {
						t.Fatalf("create: %v, want a %d refusal", err, tt.wantStatus)
					}
					if list, _ := admins.List(ctx); len(list) != 0 {
						t.Fatalf("a refused create stored %v", list)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !expires.Equal(start.Add(tt.wantLife)) {
					t.Fatalf("expires %v, want %v", expires, start.Add(tt.wantLife))
				}
				ev, _ := rec.last(audit.TypeAdminCreate)
				if e, _ := json.Marshal(ev); ev.Detail["expires_at"] != expires.Format(time.RFC3339) || strings.Contains(string(e), tok) {
					t.Fatalf("audit entry %s: no expiry, or the token", e)
				}
				// Works, and the use is recorded.
				advance(time.Minute)
				if _, err := admins.Authenticate(ctx, tok); err != nil {
					t.Fatalf("a live token: %v", err)
				}
				list, _ := admins.List(ctx)
				if len(list) != 1 || !list[0].LastUsedAt.Equal(start.Add(time.Minute)) || !list[0].ExpiresAt.Equal(expires) {
					t.Fatalf("list %+v", list)
				}
				// A use within the minute writes nothing.
				advance(30 * time.Second)
				admins.Authenticate(ctx, tok)
				if list, _ := admins.List(ctx); !list[0].LastUsedAt.Equal(start.Add(time.Minute)) {
					t.Fatalf("last use moved within the minute: %v", list[0].LastUsedAt)
				}
				// The last moment it works, then its expiry.
				advance(expires.Sub(clock()) - time.Nanosecond)
				if _, err := admins.Authenticate(ctx, tok); err != nil {
					t.Fatalf("just before expiry: %v", err)
				}
				advance(time.Nanosecond)
				got, err := admins.Authenticate(ctx, tok)
				if !errors.Is(err, ErrExpired) || !errors.Is(err, ErrBadCredentials) || got.Name != "ops" {
					t.Fatalf("at expiry: %v %+v", err, got)
				}
			})
		}
	}
}
