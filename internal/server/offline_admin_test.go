package server

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An admin token made through the data dir keeps to the admin_token_max_ttl
// the server runs with, as one made through POST /v1/admin/tokens does:
// the rescue path must not mint a longer-lived admin credential than the
// operator allowed (nor default to 90 days under a shorter maximum).
func TestCreateAdminTokenOfflineKeepsTheServersMaxTTL(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	t.Setenv("MAYFLY_MASTER_KEY", "")
	onBothBackends(t, func(t *testing.T, cfg Config) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := Init(ctx, InitOptions{DataDir: dir, Postgres: cfg.Postgres}); err != nil {
			t.Fatal(err)
		}
		cfg.DataDir, cfg.InsecureHTTP, cfg.Listen = dir, true, "127.0.0.1:0"
		cfg.AdminTokenMaxTTL = 48 * time.Hour
		srv, err := New(ctx, cfg, NewLogger(io.Discard, "text", "error"))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Close(ctx); err != nil {
			t.Fatal(err)
		}
		o := OfflineOptions{DataDir: dir, Postgres: cfg.Postgres}
		for i, tc := range []struct {
			name    string
			ttl     time.Duration
			refused string        // in the error, when refused
			expires time.Duration // else: about this far ahead
		}{
			{"longer than the maximum", 72 * time.Hour, "admin_token_max_ttl 48h", 0},
			{"the maximum", 48 * time.Hour, "", 48 * time.Hour},
			{"no ttl: the default capped to the maximum", 0, "", 48 * time.Hour},
			{"shorter", time.Hour, "", time.Hour},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := time.Now()
				_, expires, err := CreateAdminTokenOffline(ctx, o, "rescue-"+string(rune('a'+i)), "admin", tc.ttl)
				if tc.refused != "" {
					if err == nil || !strings.Contains(err.Error(), tc.refused) {
						t.Fatalf("created (expires %v), err %v; want refused with %q", expires, err, tc.refused)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if d := expires.Sub(before); d < tc.expires-time.Minute || d > tc.expires+time.Minute {
					t.Fatalf("expires in %v, want about %v", d, tc.expires)
				}
			})
		}
	})
}
