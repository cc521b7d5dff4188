package scan

import (
	"math"
	"strings"
	"testing"
	"time"
)

// A long run of "A" (the base64 of zero bytes: a blob in a repository, a
// padded key file) costs about what other text of its size costs: the
// X / Twitter rule's keyword is "A" repeated, so every byte of a run was a
// keyword hit and a regexp run over its window (24 s of CPU for 1 MiB,
// against 3 ms for plain text).
func TestRunOfKeywordCharCostLinear(t *testing.T) {
	const size = 128 << 10
	fill := func(unit string) []byte { return []byte(strings.Repeat(unit, size/len(unit))) }
	plain := fill("the quick brown fox jumps over the lazy dog; ")
	s := newScanner(t, Options{})
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"one run", fill("A")},
		{"runs of 40", fill(strings.Repeat("A", 40) + ".")},
		{"runs of 40 in lines", fill(strings.Repeat("A", 40) + "\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ratio, got, base := costRatio(plain, tc.body, func(b []byte) { s.ScanBytes("f", b) })
			// A keyword hit costs a regexp over its window (~200 times
			// plain text's cost where hits are dense); a hit on every
			// byte cost 6,000-32,000 times.
			if ratio > 1000 {
				t.Fatalf("%d bytes took %v, as much plain text %v: %.0f times as long", len(tc.body), got, base, ratio)
			}
		})
	}
}

// costRatio is how many times as long run takes over body as over plain
// text of its size: the best of pairs measured back to back, so that the
// code's cost shows, not other processes'.
func costRatio(plain, body []byte, run func([]byte)) (ratio float64, got, base time.Duration) {
	timed := func(b []byte) time.Duration {
		start := time.Now()
		run(b)
		return time.Since(start)
	}
	ratio = math.Inf(1)
	for range 3 {
		b, g := timed(plain), timed(body)
		if r := float64(g) / float64(b); r < ratio {
			ratio, got, base = r, g, b
		}
	}
	return ratio, got, base
}
