package scan

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// A token cut by terminal codes in a CI log (grep --color highlighting the
// "mfy_" it was asked for, a test runner highlighting differing
// characters, ESC[K, a '\r' overwrite) is masked by the masker; scan
// --stdin must find it, at the column of its first byte, and /v1/leaks
// must revoke it.
func TestScanTokenInterruptedByEscapeCodes(t *testing.T) {
	tok := jobToken(t)
	tests := []struct{ name, log string }{
		{"grep --color=always mfy_", "2024-05-01T10:00:00Z MAYFLY_TOKEN=\x1b[01;31m\x1b[K" + tok[:4] + "\x1b[m\x1b[K" + tok[4:] + "\n"},
		{"inverse highlight of differing characters", "Expected: \"" + tok[:12] + "\x1b[7m" + tok[12:20] + "\x1b[27m" + tok[20:] + "\"\n"},
		{"colour change mid-token", "token: \x1b[32m" + tok[:20] + "\x1b[0m\x1b[33m" + tok[20:] + "\x1b[0m\n"},
		{"erase to end of line mid-token", "token: " + tok[:25] + "\x1b[K" + tok[25:] + "\n"},
		{"carriage return mid-token", "token: " + tok[:10] + "\r" + tok[10:] + "\n"},
		{"CRLF log, colour mid-token", "first line\r\ntoken: " + tok[:10] + "\x1b[1m" + tok[10:] + "\r\n"},
	}
	s := newScanner(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var found []Finding
			if err := s.ScanReader(context.Background(), "stdin", strings.NewReader(tt.log), func(f Finding) {
				found = append(found, f)
			}); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(found, func(f Finding) bool { return f.Secret == tok })
			if i < 0 {
				t.Fatalf("scan --stdin misses the job token (findings %d)", len(found))
			}
			start := strings.Index(tt.log, tok[:4])
			line := 1 + strings.Count(tt.log[:start], "\n")
			col := start - strings.LastIndex(tt.log[:start], "\n")
			if found[i].Line != line || found[i].Column != col {
				t.Errorf("found at %d:%d, want %d:%d (its first byte in the log)", found[i].Line, found[i].Column, line, col)
			}
			if leak := ParseLeakReport([]byte(tt.log)); !slices.Contains(leak.Tokens, tok) {
				t.Errorf("/v1/leaks would not revoke it (tokens %d)", len(leak.Tokens))
			}
		})
	}
}

func TestStripTermCodes(t *testing.T) {
	tests := []struct {
		name, in, want string
		has            bool
	}{
		{"plain", "abc\n", "abc\n", false},
		{"CRLF only", "a\r\nb\r\n", "a\nb\n", false},
		{"lone CR", "a\rb", "ab", true},
		{"colour", "a\x1b[01;31mb\x1b[mc", "abc", true},
		{"erase", "a\x1b[Kb", "ab", true},
		{"ESC not starting CSI is kept", "a\x1b(Bb", "a\x1b(Bb", true},
		{"unterminated CSI is kept", "a\x1b[12", "a\x1b[12", true},
		{"CSI over 32 parameter bytes is kept", "a\x1b[" + strings.Repeat("1", 33) + "mb", "a\x1b[" + strings.Repeat("1", 33) + "mb", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hasTermCodes([]byte(tt.in)); got != tt.has {
				t.Errorf("hasTermCodes = %v, want %v", got, tt.has)
			}
			got, at := stripTermCodes([]byte(tt.in), stripOpts{})
			if string(got) != tt.want {
				t.Fatalf("stripTermCodes = %q, want %q", got, tt.want)
			}
			for k, o := range at {
				if tt.in[o] != got[k] || k > 0 && o <= at[k-1] {
					t.Fatalf("offset %d of the result maps to %d of the input", k, o)
				}
			}
		})
	}
}

func TestStripWraps(t *testing.T) {
	l64, l76, l75 := strings.Repeat("Q", 64), strings.Repeat("w", 76), strings.Repeat("e", 75)
	const gha, gitlab = "2026-12-06T10:00:00.1234567Z ", "2026-12-06T10:00:00.123456Z 01E "
	tests := []struct {
		name, in, want string
		has            bool
	}{
		{"PEM line", l64 + "\n" + "abc\n", l64 + "abc\n", true},
		{"base64(1) line, CRLF", l76 + "\r\n" + "abc\r\n", l76 + "abc\n", true},
		{"75 columns is no wrap", l75 + "\n" + "abc\n", l75 + "\n" + "abc\n", false},
		{"a longer run is no wrap", "y" + l76 + "\n" + "abc\n", "y" + l76 + "\n" + "abc\n", false},
		{"GitHub Actions timestamps", gha + l76 + "\n" + gha + "abc\n", gha + l76 + "abc\n", true},
		{"GitLab timestamps", gitlab + l76 + "\n" + gitlab + "abc\n", gitlab + l76 + "abc\n", true},
		{"not a timestamp", l76 + "\n" + "2026-12-06 10:00 abc\n", l76 + "2026-12-06 10:00 abc\n", true},
		{"a digest ending a line is no wrap", "image: app@sha256:" + l64 + "\n" + "abc\n", "image: app@sha256:" + l64 + "\n" + "abc\n", false},
		{"a digest after a timestamp-like prefix is no wrap", "2026-12-06T10:00:00Z x" + l64 + "\n" + "abc\n", "2026-12-06T10:00:00Z x" + l64 + "\n" + "abc\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hasWrap([]byte(tt.in)); got != tt.has {
				t.Errorf("hasWrap = %v, want %v", got, tt.has)
			}
			got, at := stripTermCodes([]byte(tt.in), stripOpts{wraps: true})
			if string(got) != tt.want {
				t.Fatalf("stripTermCodes = %q, want %q", got, tt.want)
			}
			for k, o := range at {
				if tt.in[o] != got[k] || k > 0 && o <= at[k-1] {
					t.Fatalf("offset %d of the result maps to %d of the input", k, o)
				}
			}
		})
	}
}
