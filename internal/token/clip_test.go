package token

import (
	"strings"
	"testing"
)

// Clip bounds text at a limit but never keeps part of a credential's run
// of characters: the whole run across the limit goes.
func TestClip(t *testing.T) {
	tok, err := New(Job)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in, want string
		limit          int
	}{
		{"short enough", "abc def", "abc def", 7},
		{"cut between words", "abc def ghi", "abc def", 7},
		{"cut inside a word drops it", "abc def ghi", "abc ", 6},
		{"cut inside a token drops it", "refused " + tok + " here", "refused ", 8 + 36},
		{"a token before the cut stays whole", "refused " + tok + " here", "refused " + tok + " ", 8 + len(tok) + 1},
		{"all one run", strings.Repeat("a", 10), "", 5},
	} {
		if got := Clip(tc.in, tc.limit); got != tc.want {
			t.Errorf("%s: Clip(%q, %d) = %q, want %q", tc.name, tc.in, tc.limit, got, tc.want)
		}
	}
}
