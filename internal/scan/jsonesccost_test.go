package scan

import (
	"strings"
	"testing"
)

// JSON dense with escapes (a .NET log escaping every '+', PHP's URLs, a
// value escaped letter by letter) costs about what other text of its size
// costs: the escapes are read through in one more pass, not per escape.
func TestJSONEscapesCostLinear(t *testing.T) {
	const size = 128 << 10
	fill := func(unit string) []byte { return []byte(strings.Repeat(unit, size/len(unit))) }
	plain := fill("the quick brown fox jumps over the lazy dog; ")
	s := newScanner(t, Options{})
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"\\u0041 only", fill(`\u0041`)},
		{"escaped letters and words", fill(`{"k":"\u0067hp_\u0041b\/c\/d"},`)},
		{"\\/ only", fill(`\/`)},
		{"escaped backslashes", fill(`\\u0041\\/`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ratio, got, base := costRatio(plain, tc.body, func(b []byte) { s.ScanBytes("f.json", b) })
			// Two passes, over text dense in keyword hits: 2-10 times.
			// Decoding each escape's surroundings would cost thousands.
			if ratio > 50 {
				t.Fatalf("%d bytes took %v, as much plain text %v: %.0f times as long", len(tc.body), got, base, ratio)
			}
		})
	}
}
