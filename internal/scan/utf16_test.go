package scan

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

// utf16Bytes is s in UTF-16, little- or big-endian, with a byte order mark.
func utf16Bytes(s string, big bool) []byte {
	b := []byte{0xFF, 0xFE}
	if big {
		b = []byte{0xFE, 0xFF}
	}
	for _, u := range utf16.Encode([]rune(s)) {
		if big {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return b
}

// Windows tools write UTF-16: Windows PowerShell's ">" and Out-File, a
// .reg export, a config saved as "Unicode". The masker masks a secret's
// UTF-16 forms; the scanner must find a token in such a log or file too,
// and /v1/leaks revoke it from such a log.
func TestScanUTF16(t *testing.T) {
	s := newScanner(t, Options{})
	t.Run("log", func(t *testing.T) {
		for _, big := range []bool{false, true} {
			tok := jobToken(t)
			log := utf16Bytes("PS> .\\deploy.ps1\r\n$env:MAYFLY_TOKEN = '"+tok+"'\r\ndone\r\n", big)
			var found []string
			if err := s.ScanReader(context.Background(), "stdin", strings.NewReader(string(log)), func(f Finding) {
				found = append(found, f.Secret)
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(found, tok) {
				t.Errorf("big-endian %v: scan --stdin misses the token (findings %d)", big, len(found))
			}
			if rep := ParseLeakReport(log); !slices.Contains(rep.Tokens, tok) {
				t.Errorf("big-endian %v: /v1/leaks would not revoke it (tokens %d)", big, len(rep.Tokens))
			}
		}
	})
	t.Run("UTF-16 output inside a longer log", func(t *testing.T) {
		tok := jobToken(t)
		log := strings.Repeat("Run actions/checkout@v4\n", 200) + "PS> .\\deploy.ps1 > out.txt; type out.txt\n" +
			string(utf16Bytes("$env:MAYFLY_TOKEN = '"+tok+"'\r\n", false)) + "\n" + strings.Repeat("Post job cleanup.\n", 200)
		var found []string
		for _, f := range s.ScanBytes("ci.log", []byte(log)) {
			found = append(found, f.Secret)
		}
		if !slices.Contains(found, tok) {
			t.Errorf("scan misses the token (findings %d)", len(found))
		}
		if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
			t.Errorf("/v1/leaks would not revoke it (tokens %d)", len(rep.Tokens))
		}
	})
	t.Run("file", func(t *testing.T) {
		tok := jobToken(t)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "settings.env"), utf16Bytes("# saved by Out-File\r\nMAYFLY_TOKEN="+tok+"\r\n", false), 0o600); err != nil {
			t.Fatal(err)
		}
		var found []string
		if _, err := s.ScanPaths(context.Background(), []string{dir}, func(f Finding) { found = append(found, f.Secret) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(found, tok) {
			t.Errorf("scan misses the token in a UTF-16 file (findings %d)", len(found))
		}
	})
	t.Run("allow comment", func(t *testing.T) {
		tok := jobToken(t)
		for _, big := range []bool{false, true} {
			b := utf16Bytes("MAYFLY_TOKEN="+tok+" # mayfly:allow a test fixture\r\n", big) // mayfly:allow the marker under test
			if fs := s.ScanBytes("fixture.env", b); len(fs) != 0 {
				t.Errorf("big-endian %v: a line marked mayfly:allow is reported (%d findings)", big, len(fs))
			}
		}
	})
}
