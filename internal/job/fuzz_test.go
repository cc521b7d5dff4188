package job

import (
	"strings"
	"testing"
)

// FuzzCleanIDToken: accepted tokens are trimmed compact JWS shapes.
func FuzzCleanIDToken(f *testing.F) {
	f.Add(" a.b.c\n")
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := cleanIDToken(s)
		if err != nil {
			return
		}
		if strings.Count(out, ".") != 2 || strings.ContainsAny(out, " \n\r\t") || len(out) > MaxIDTokenSize {
			t.Fatalf("accepted %q", out)
		}
	})
}
