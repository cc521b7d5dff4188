package scan

import (
	"slices"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// A checksummed GitHub token right after an escape that ends in a letter
// or digit (JSON's "\n", a URL's "%0A") is a token, as token.Find takes a
// mayfly token there: the letter belongs to the escape, not to a longer
// word.
func TestGitHubTokenAfterEscape(t *testing.T) {
	const body = "q7Z2xK9mP4r8T1vW3yB6nC0dF5gH2j"
	ghs := "ghs_" + body + token.Checksum(body) // mayfly:allow test token, checksum only
	ghp := "ghp_" + body + token.Checksum(body) // mayfly:allow test token, checksum only
	s := newScanner(t, Options{})
	tests := []struct {
		name, text, secret string
		leak               bool // a leak report revokes it (ghs_ only)
		want               bool
	}{
		{"ghs_ after JSON \\n", `{"log":"step 1\n` + ghs + `\nstep 2"}`, ghs, true, true},
		{"ghs_ after JSON \\t", `{"log":"token:\t` + ghs + `"}`, ghs, true, true},
		{"ghs_ after JSON \\u000a", `{"log":"token:\u000a` + ghs + `"}`, ghs, true, true},
		{"ghs_ after %0A", "GET /x?log=step%0A" + ghs + "%0A HTTP/1.1", ghs, true, true},
		{"ghp_ after JSON \\n", `{"log":"step 1\n` + ghp + `"}`, ghp, false, true},
		{"ghp_ after %0D%0A", "body=a%0D%0A" + ghp, ghp, false, true},
		// Still glued: an escaped backslash then 'n', a plain word.
		{"ghs_ after JSON \\\\n", `{"log":"C:\\n` + ghs + `"}`, ghs, true, false},
		{"ghs_ glued to a word", "xyz" + ghs, ghs, true, false},
		{"ghp_ glued to a word", "xyz" + ghp, ghp, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var found []string
			for _, f := range s.ScanBytes("ci.log", []byte(tt.text)) {
				found = append(found, f.Secret)
			}
			if got := slices.Contains(found, tt.secret); got != tt.want {
				t.Errorf("the scanner finds it: %v, want %v", got, tt.want)
			}
			if tt.leak {
				if got := slices.Contains(ParseLeakReport([]byte(tt.text)).GitHubTokens, tt.secret); got != tt.want {
					t.Errorf("a leak report revokes it: %v, want %v", got, tt.want)
				}
			}
		})
	}
}
