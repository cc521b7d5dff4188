package api

import (
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
)

func TestLeaseCursorRoundTrip(t *testing.T) {
	for _, c := range []store.LeaseCursor{
		{IssuedAt: time.Unix(0, 1).UTC(), ID: "lse_a"},
		{IssuedAt: time.Date(2026, 12, 4, 19, 0, 0, 123456789, time.UTC), ID: "lse_0123456789abcdefABCDEF-_"},
	} {
		got, err := parseLeaseCursor(formatLeaseCursor(c))
		if err != nil || !got.IssuedAt.Equal(c.IssuedAt) || got.ID != c.ID {
			t.Errorf("round trip of %+v = %+v, %v", c, got, err)
		}
	}
	for _, bad := range []string{"", "!!", "MS4xLg", "Mi4xLmxzZV9h", "MS4tMS5sc2VfYQ", "MS4xLmxzZV9hJyBPUiAxPTE", strings.Repeat("A", 400)} {
		if _, err := parseLeaseCursor(bad); err == nil {
			t.Errorf("parseLeaseCursor(%q) accepted", bad)
		}
	}
}

// FuzzLeaseCursor: whatever a client sends, an accepted cursor is a lease
// id of safe characters and formats back to itself.
func FuzzLeaseCursor(f *testing.F) {
	f.Add(formatLeaseCursor(store.LeaseCursor{IssuedAt: time.Unix(5, 0), ID: "lse_x"}))
	f.Add("MS4xLmxzZV9hJyBPUiAxPTE")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseLeaseCursor(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(c.ID, "'\";%. \\") || c.ID == "" {
			t.Fatalf("accepted id %q", c.ID)
		}
		if again, err := parseLeaseCursor(formatLeaseCursor(c)); err != nil || again != c {
			t.Fatalf("%+v does not round trip: %+v %v", c, again, err)
		}
	})
}
