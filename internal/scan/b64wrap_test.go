package scan

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// base64(1) and MIME wrap at 76 columns, PEM at 64, Ruby at 60: a whole .env
// file or config printed base64-encoded in a CI log comes in lines, and a
// token may straddle a line end. The masker looks through such a line end
// (internal/mask, wrap.go); scan --stdin must find the token and /v1/leaks
// revoke it, also in a log as GitHub Actions and GitLab hand it out, a
// timestamp before every line, and with "\r\n" line ends.
func TestScanWrappedBase64(t *testing.T) {
	wrap := func(enc string, width int, sep, prefix string) string {
		var lines []string
		for len(enc) > width {
			lines = append(lines, prefix+enc[:width])
			enc = enc[width:]
		}
		return strings.Join(append(lines, prefix+enc), sep) + sep
	}
	const gha = "2026-12-06T10:00:00.1234567Z "
	const gitlab = "2026-12-06T10:00:00.123456Z 00O "
	tests := []struct {
		name          string
		width         int
		sep, prefix   string
		before, after string
	}{
		{"base64, 76 columns", 76, "\n", "", "$ base64 .env\n", "$ echo done\n"},
		{"PEM, 64 columns", 64, "\n", "", "-----BEGIN ENV-----\n", "-----END ENV-----\n"},
		{"Ruby's Base64.encode64, 60 columns", 60, "\n", "", "$ ruby -rbase64 -e 'puts Base64.encode64(File.read(\".env\"))'\n", ""},
		{"CRLF line ends", 76, "\r\n", "", "PS> certutil -encode\r\n", ""},
		{"GitHub Actions log", 76, "\n", gha, gha + "$ base64 .env\n", gha + "$ echo done\n"},
		{"GitLab log", 76, "\n", gitlab, gitlab + "$ base64 .env\n", ""},
	}
	s := newScanner(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The token straddles the first line end, at each alignment.
			for pad := 0; pad < 3; pad++ {
				tok := jobToken(t)
				lead := tt.width*3/4 - 20 + pad
				plain := strings.Repeat("#", lead-len("\nMAYFLY_TOKEN=")) + "\nMAYFLY_TOKEN=" + tok + "\nOTHER=value\n"
				log := tt.before + wrap(base64.StdEncoding.EncodeToString([]byte(plain)), tt.width, tt.sep, tt.prefix) + tt.after
				var found []string
				if err := s.ScanReader(context.Background(), "stdin", strings.NewReader(log), func(f Finding) {
					found = append(found, f.Secret)
				}); err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(found, tok) {
					t.Errorf("alignment %d: scan --stdin misses the token (findings %d)", pad, len(found))
				}
				if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
					t.Errorf("alignment %d: /v1/leaks would not revoke it (tokens %d)", pad, len(rep.Tokens))
				}
			}
		})
	}
}

// xxd -p prints hex in lines of 60 characters, which are base64
// characters too: a token whose hex straddles a line end is found as in
// wrapped base64.
func TestScanWrappedHex(t *testing.T) {
	s := newScanner(t, Options{})
	for lead := 1; lead < 30; lead += 7 {
		tok := jobToken(t)
		h := hex.EncodeToString([]byte(strings.Repeat("#", lead) + "\nT=" + tok + "\n"))
		var lines []string
		for len(h) > 60 {
			lines, h = append(lines, h[:60]), h[60:]
		}
		log := "$ xxd -p .env\n" + strings.Join(append(lines, h), "\n") + "\n"
		var found []string
		for _, f := range s.ScanBytes("ci.log", []byte(log)) {
			found = append(found, f.Secret)
		}
		if !slices.Contains(found, tok) {
			t.Errorf("lead %d: scan misses the token (findings %d)", lead, len(found))
		}
		if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
			t.Errorf("lead %d: /v1/leaks would not revoke it (tokens %d)", lead, len(rep.Tokens))
		}
	}
}
