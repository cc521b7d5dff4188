package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/authority"
)

// TestRoleDenialFailsClosed: a refusal for the caller's role that cannot
// be recorded is answered 503, and nothing is done.
func TestRoleDenialFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name       string
		closed     bool
		wantStatus int
		wantText   string
	}{
		{"recorded", false, http.StatusForbidden, "needs the operator role"},
		{"log down", true, http.StatusServiceUnavailable, "cannot record this refusal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBench(t)
			b.auth.who.Role = authority.RoleAuditor
			size := b.log.Size()
			if tc.closed {
				if err := b.log.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			live, _, err := b.m.Counts(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			w := b.post(t, "/ui/leases/revoke", url.Values{"csrf": {b.auth.csrf}, "grant": {"read"}, "confirm": {"yes"}})
			if w.Code != tc.wantStatus || !strings.Contains(w.Body.String(), tc.wantText) {
				t.Fatalf("%d %q, want %d with %q", w.Code, w.Body.String(), tc.wantStatus, tc.wantText)
			}
			if after, _, err := b.m.Counts(t.Context()); err != nil || after != live {
				t.Fatalf("live leases %d → %d (%v): a refused revocation revoked", live, after, err)
			}
			if !tc.closed && b.log.Size() != size+1 {
				t.Fatalf("log grew by %d entries, want 1 (admin.denied)", b.log.Size()-size)
			}
		})
	}
}
