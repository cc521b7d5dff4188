package authority

import (
	"cmp"
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

// A session in use works until admin_session_ttl, then is refused with
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
			// In use (admin_session_idle is 1h), it lasts until admin_session_ttl.
			for range 2 {
				advance(50 * time.Minute)
				if _, err := s.Authenticate(ctx, v); err != nil {
					t.Fatalf("in use: %v", err)
				}
			}
			advance(20*time.Minute - time.Second)
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

// A session left unused for admin_session_idle (default 1h) ends: a
// browser left signed in, or a cookie or CLI session file someone copied,
// is not good for the rest of admin_session_ttl. One in use lasts until
// admin_session_ttl.
func TestSessionIdle(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name  string
				idle  time.Duration // 0: the default
				steps []time.Duration
				ok    []bool // Authenticate after each step
			}{
				{"never used after sign-in", 0, []time.Duration{time.Hour}, []bool{false}},
				{"used just within the hour", 0, []time.Duration{time.Hour - time.Second, time.Hour - time.Second}, []bool{true, true}},
				{"unused for an hour", 0, []time.Duration{30 * time.Minute, time.Hour}, []bool{true, false}},
				{"in use until admin_session_ttl", 0,
					[]time.Duration{50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute, 50 * time.Minute},
					[]bool{true, true, true, true, true, true, true, true, true, false}}, // 8h20m: past admin_session_ttl
				{"admin_session_idle 10m", 10 * time.Minute, []time.Duration{9 * time.Minute, 9 * time.Minute, 10 * time.Minute}, []bool{true, true, false}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var mu sync.Mutex
					now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
					clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
					s := NewSessions(b.DB, h, newRecorder(t, b.DB), clock, 8*time.Hour)
					if tc.idle > 0 {
						s.LimitIdle(tc.idle)
					}
					v, row, err := s.Create(ctx, SignedIn{Name: "oidc:ops@example.com", Subject: "u1", Issuer: "https://idp", Role: RoleAdmin}, ViaBrowser, netip.Addr{})
					if err != nil {
						t.Fatal(err)
					}
					lastUse := now
					for i, d := range tc.steps {
						mu.Lock()
						now = now.Add(d)
						mu.Unlock()
						got, err := s.Authenticate(ctx, v)
						if tc.ok[i] {
							if err != nil {
								t.Fatalf("step %d (+%s): %v", i, d, err)
							}
							lastUse = clock()
							continue
						}
						if !errors.Is(err, ErrExpired) {
							t.Fatalf("step %d (+%s): a session unused since %s still works at %s (%v)", i, d, lastUse, clock(), err)
						}
						want := lastUse.Add(cmp.Or(tc.idle, time.Hour))
						if row.ExpiresAt.Before(want) {
							want = row.ExpiresAt
						}
						if !got.ExpiresAt.Equal(want) {
							t.Errorf("the refusal says it ended at %s, want %s", got.ExpiresAt, want)
						}
						list, err := s.List(ctx)
						if err != nil {
							t.Fatal(err)
						}
						for _, l := range list {
							if l.ID == row.ID {
								t.Fatalf("the ended session is still listed: %+v", l)
							}
						}
					}
				})
			}
		})
	}
}
