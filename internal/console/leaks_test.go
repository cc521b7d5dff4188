package console

import (
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// The leaks page says what each report revoked: its leases, and the admin
// tokens and admin sessions (SSO) it counts.
func TestLeaksPageCountsSessions(t *testing.T) {
	b := newBench(t, storetest.SQLite(t).DB, 3, 1000)
	w := b.get(t, "/ui/leaks")
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	for _, want := range []string{`href="/ui/audit/999"`, "1 admin token(s)", "2 admin session(s)"} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("the leaks page lacks %q", want)
		}
	}
}
