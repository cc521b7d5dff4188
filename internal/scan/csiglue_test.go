package scan

import (
	"slices"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// A token right after a terminal code whose final byte is a letter
// (ESC[0m, ESC[K) starts a word on the screen, whatever came before the
// code: a progress line overwritten by "\r\033[K", a word coloured just
// before it, a GitLab section header. The letter ends the code, not a
// longer word, so the token is found and, if a leak report names it,
// revoked.
func TestTokenAfterTerminalCode(t *testing.T) {
	const body = "R4n8Kq2Wz7Xc1Vb5Nm9Lp3Jh6Gf0Dk"
	ghs := "ghs_" + body + token.Checksum(body) // mayfly:allow test token, checksum only
	ghp := "ghp_" + body + token.Checksum(body) // mayfly:allow test token, checksum only
	s := newScanner(t, Options{})
	tests := []struct {
		name, text, secret string
		want               bool
	}{
		{"after a colour code after a word", "token\x1b[36;1m" + ghp + "\x1b[0m\n", ghp, true},
		{"after a progress line cleared", "Downloading 42 files\r\x1b[K" + ghp + "\n", ghp, true},
		{"after a reset after a word", "\x1b[1mkey\x1b[0m" + ghs + "\n", ghs, true},
		{"after a GitLab section header", "\x1b[0Ksection_start:1700000000:step_script\r\x1b[0K\x1b[0K\x1b[36;1m" + ghs + "\x1b[0;m\n", ghs, true},
		{"after a code without parameters", "abc\x1b[m" + ghp + "\n", ghp, true},
		// Still glued: no ESC, so "[1m" is plain text.
		{"after [1m without ESC", "abc[1m" + ghp + "\n", ghp, false},
		{"glued to a word", "xyz" + ghp + "\n", ghp, false},
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
			if tt.secret == ghs {
				if got := slices.Contains(ParseLeakReport([]byte(tt.text)).GitHubTokens, tt.secret); got != tt.want {
					t.Errorf("a leak report revokes it: %v, want %v", got, tt.want)
				}
			}
		})
	}
}
