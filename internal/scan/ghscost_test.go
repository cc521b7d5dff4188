package scan

import (
	"strings"
	"testing"
)

// Text packed with what looks like the start of a stateless ghs_ token
// ("ghs_" + digits + "_" + base64url) costs about what other text of its
// size costs, in a leak report (unauthenticated, one at a time per node)
// and in a scanned file: each candidate glued to the base64url run of the
// one before is not read again to its end (up to 8 KiB each, ~200 times
// the cost of plain text before).
func TestGitHubTokenLookalikesCostLinear(t *testing.T) {
	const size = 256 << 10
	fill := func(unit string) []byte { return []byte(strings.Repeat(unit, size/len(unit))) }
	plain := fill("the quick brown fox jumps over the lazy dog; ")
	s := newScanner(t, Options{})
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"ghs chain", fill("ghs_1_")},
		{"ghs chain with a JWT header's start", fill("ghs_1_eyJ")},
		{"ghs chain with two dots per 8 KiB", fill(strings.Repeat("ghs_12_", 1100) + ".eyJhIjoxfQ.sig")},
	} {
		for _, p := range []struct {
			name string
			run  func([]byte)
		}{
			{"leak report", func(b []byte) { ParseLeakReport(b) }},
			{"scan", func(b []byte) { s.ScanBytes("f", b) }},
		} {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				ratio, got, base := costRatio(plain, tc.body, p.run)
				if ratio > 20 {
					t.Fatalf("%d bytes took %v, as much plain text %v: %.0f times as long", len(tc.body), got, base, ratio)
				}
			})
		}
	}
}
