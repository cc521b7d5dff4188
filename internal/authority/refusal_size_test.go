package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A refusal is answered as a refusal and recorded whatever the caller
// sent: a scope or path that the form (64 KiB) and header limits let
// through, but that JSON escapes to more than an audit entry holds (each
// '<' is written \u003c, each control character \u0001), is clipped in
// the entry instead of turning the refusal into a 503 with no entry.
func TestRefusalOfLargeInputAudited(t *testing.T) {
	b := newBench(t)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	sessions := NewSessions(b.db, h, b.rec, time.Now, time.Hour)
	src := netip.MustParseAddr("192.0.2.7")
	ctx := context.Background()
	exchange := func(raw string, scope string) func(t *testing.T) error {
		return func(t *testing.T) error {
			if raw == "" {
				raw = b.mint(t, map[string]any{"repository": "acme/app", "ref": "refs/heads/main"})
			}
			_, err := b.a.Exchange(ctx, ExchangeRequest{SubjectToken: raw, Scope: []string{scope}, Source: src})
			if re := (*Error)(nil); errors.As(err, &re) && re.Status == 400 {
				return nil
			}
			return fmt.Errorf("Exchange = %v, want a 400 refusal", err)
		}
	}
	tests := []struct {
		name string
		typ  string
		do   func(t *testing.T) error
	}{
		{"bad ID token, scope of HTML characters", audit.TypeExchange, exchange("a.b.c", strings.Repeat("<", 20000))},
		{"valid ID token, unknown grant of control characters", audit.TypeExchange, exchange("", strings.Repeat("\x01", 20000))},
		{"control-plane denial, long path", TypeAdminDenied, func(*testing.T) error {
			return b.admins.Deny(ctx, Denial{Source: src, Method: "GET", Path: "/v1/secrets/" + strings.Repeat("\x01", 15000), Status: 403, Reason: DeniedNetwork})
		}},
		{"session refusal, long path", TypeAdminDenied, func(*testing.T) error {
			return sessions.Refuse(ctx, Refusal{Source: src, Method: "GET", Path: "/ui/" + strings.Repeat("<", 30000), Status: 403, Reason: DeniedNoToken})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.rec.count(tt.typ)
			if err := tt.do(t); err != nil {
				t.Fatal(err)
			}
			if n := b.rec.count(tt.typ) - before; n != 1 {
				t.Fatalf("%d %s entries recorded for the refusal, want 1", n, tt.typ)
			}
			ev, _ := b.rec.last(tt.typ)
			detailGrant, _ := ev.Detail["grant"].(string)
			for name, v := range map[string]string{"grant": ev.Grant, "reason": ev.Reason, "path": ev.Path, "detail.grant": detailGrant} {
				if len(v) > 512 {
					t.Errorf("the entry's %s holds %d bytes, want at most 512", name, len(v))
				}
			}
		})
	}
}
