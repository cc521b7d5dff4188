package console

import (
	"strings"
	"testing"
)

// The console's readers of query strings never panic, and what they accept
// round-trips (cursors) or lies in range (status filters).
func FuzzLeaseCursor(f *testing.F) {
	f.Add("MTcwMDAwMDAwMDAwMDAwMDAwMC5sc2VfYWJj")
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := parseLeaseCursor(s)
		if !ok {
			return
		}
		if c.ID == "" || strings.ContainsAny(c.ID, "'\\\"%; ") {
			t.Fatalf("accepted id %q", c.ID)
		}
		back, ok := parseLeaseCursor(formatLeaseCursor(c))
		if !ok || back != c {
			t.Fatalf("%q: %v does not round-trip", s, c)
		}
	})
}

func FuzzStatusRange(f *testing.F) {
	for _, s := range []string{"", "200", "4xx", "refused", "99", "600", "-1", "2xx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, ok := statusRange(s)
		if ok && s != "" && (lo < 100 || hi > 599 || lo > hi) {
			t.Fatalf("%q: %d-%d", s, lo, hi)
		}
	})
}
