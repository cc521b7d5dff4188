package authority

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A session works until admin_session_ttl, then is refused with
// ErrExpired; signed out or revoked it is refused as unknown; its CSRF
// token is its own; a sign-in step is taken once and not after LoginTTL;
// no row holds the value. On both stores.
func TestSessions(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			db := b.DB
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
			s := NewSessions(db, h, newRecorder(t, db), clock, 2*time.Hour)
			who := SignedIn{Name: "oidc:ops@example.com", Subject: "u1", Issuer: "https://idp", Role: RoleOperator}
			v, row, err := s.Create(ctx, who, ViaBrowser, netip.MustParseAddr("127.0.0.1"))
			if err != nil {
				t.Fatal(err)
			}
			if !LooksLikeSession(v) || !row.ExpiresAt.Equal(now.Add(2*time.Hour)) {
				t.Fatalf("value shape %v, expiry %v", LooksLikeSession(v), row.ExpiresAt)
			}
			if _, _, err := s.Create(ctx, SignedIn{Name: "x", Role: "root"}, ViaCLI, netip.Addr{}); err == nil {
				t.Fatal("a session for no role")
			}
			got, err := s.Authenticate(ctx, v)
			if err != nil || got.ID != row.ID || got.Role != RoleOperator {
				t.Fatalf("authenticate: %v %+v", err, got)
			}
			v2, row2, _ := s.Create(ctx, who, ViaCLI, netip.Addr{})
			if !s.CheckCSRF(v, s.CSRF(v)) || s.CheckCSRF(v, s.CSRF(v2)) || s.CheckCSRF(v, "") || strings.Contains(s.CSRF(v), v[5:15]) {
				t.Fatal("CSRF tokens")
			}
			for _, bad := range []string{"", "mfys_short", v[:len(v)-1] + "!", "mfys_" + strings.Repeat("A", 43)} {
				if _, err := s.Authenticate(ctx, bad); !errors.Is(err, ErrBadCredentials) || errors.Is(err, ErrExpired) {
					t.Errorf("%q: %v", bad, err)
				}
			}
			// No row holds a value.
			list, err := s.List(ctx)
			if err != nil || len(list) != 2 {
				t.Fatalf("list: %v %d", err, len(list))
			}
			if err := s.SignOut(ctx, row2, netip.Addr{}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Authenticate(ctx, v2); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("signed out: %v", err)
			}
			if err := s.Revoke(ctx, row2.ID, "root", netip.Addr{}); err == nil {
				t.Fatal("revoking a signed-out session")
			}
			advance(2*time.Hour - time.Second)
			if _, err := s.Authenticate(ctx, v); err != nil {
				t.Fatalf("before expiry: %v", err)
			}
			advance(time.Second)
			if got, err := s.Authenticate(ctx, v); !errors.Is(err, ErrExpired) || got.ID != row.ID {
				t.Fatalf("at expiry: %v", err)
			}

			// Sign-in steps: once, and not after LoginTTL.
			if err := s.PutLogin(ctx, "state-1", LoginState, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.TakeLogin(ctx, "state-1", LoginCLICode); !errors.Is(err, ErrNoLogin) {
				t.Fatalf("another kind: %v", err)
			}
			if _, err := s.TakeLogin(ctx, "state-1", LoginState); err != nil {
				t.Fatal(err)
			}
			if _, err := s.TakeLogin(ctx, "state-1", LoginState); !errors.Is(err, ErrNoLogin) {
				t.Fatalf("taken twice: %v", err)
			}
			s.PutLogin(ctx, "state-2", LoginState, []byte(`{}`))
			advance(LoginTTL)
			if _, err := s.TakeLogin(ctx, "state-2", LoginState); !errors.Is(err, ErrNoLogin) {
				t.Fatalf("expired step: %v", err)
			}
		})
	}
}

func FuzzLooksLikeSession(f *testing.F) {
	f.Add("mfys_" + strings.Repeat("A", 43))
	f.Add("mfys_")
	f.Add("mfya_abc")
	f.Fuzz(func(t *testing.T, v string) {
		if LooksLikeSession(v) && (len(v) != SessionLen || !strings.HasPrefix(v, SessionPrefix) || strings.ContainsAny(v[5:], "=+/ ;\x00")) {
			t.Fatalf("accepted %q", v)
		}
	})
}

// Sessions last at most admin_session_ttl (README): a server restarted
// with a shorter setting ends the sessions made under the longer one when
// the shorter one says, rather than hours later.
func TestSessionTTLLowered(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			before := NewSessions(b.DB, h, newRecorder(t, b.DB), clock, 8*time.Hour)
			v, _, err := before.Create(ctx, SignedIn{Name: "oidc:ops@example.com", Subject: "u1", Issuer: "https://idp", Role: RoleAdmin}, ViaBrowser, netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			after := NewSessions(b.DB, h, newRecorder(t, b.DB), clock, time.Hour)
			mu.Lock()
			now = now.Add(time.Hour - time.Second)
			mu.Unlock()
			if _, err := after.Authenticate(ctx, v); err != nil {
				t.Fatalf("within the new admin_session_ttl: %v", err)
			}
			mu.Lock()
			now = now.Add(time.Second)
			mu.Unlock()
			got, err := after.Authenticate(ctx, v)
			if !errors.Is(err, ErrExpired) {
				t.Fatalf("a session made under admin_session_ttl 8h still works %s after admin_session_ttl became 1h (expires %s)", time.Hour, got.ExpiresAt)
			}
			if !got.ExpiresAt.Equal(now) {
				t.Errorf("the refusal says the session expired at %s, want %s", got.ExpiresAt, now)
			}
			list, err := after.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 0 {
				t.Fatalf("the session is still listed as live: %+v", list)
			}
		})
	}
}
