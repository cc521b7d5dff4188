package mask

import (
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// A write of many '\r' (a progress bar redrawn in place, a flood from a
// job's child or an upstream's body through the gateway) costs in
// proportion to its length: a 32 KiB write of them cost ~0.23 s, 64 KiB
// ~1 s (each '\r' read the rest of its run again).
func TestCarriageReturnRunsCostLinear(t *testing.T) {
	m, err := NewMatcher([][]byte{[]byte("s3cr3t-value-0123456789")})
	if err != nil {
		t.Fatal(err)
	}
	timed := func(unit string, n int) time.Duration {
		w := m.NewWriter(io.Discard, Options{Idle: -1})
		defer w.Close()
		b := []byte(strings.Repeat(unit, n/len(unit)))
		start := time.Now()
		w.Write(b)
		return time.Since(start)
	}
	for _, unit := range []string{"\r", "\r\r\r\ra", "\r\n"} {
		t.Run(strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(unit), func(t *testing.T) {
			// Linear work: a ratio near 8; quadratic near 64. The best of
			// pairs measured back to back.
			ratio := math.Inf(1)
			var small, large time.Duration
			for range 5 {
				s, l := timed(unit, 8<<10), timed(unit, 64<<10)
				if r := float64(l) / float64(s); r < ratio {
					ratio, small, large = r, s, l
				}
			}
			if ratio > 24 {
				t.Fatalf("a write of 64 KiB took %v, of 8 KiB %v: %.0f times as long", large, small, ratio)
			}
		})
	}
}
