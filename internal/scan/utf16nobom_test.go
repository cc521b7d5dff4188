package scan

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unicode/utf16"
)

// utf16NoBOM is s in UTF-16 without a byte order mark, as git checks out
// a file whose .gitattributes says working-tree-encoding=UTF-16LE (or BE),
// and as .NET's Encoding.Unicode.GetBytes and Python's "utf-16-le" write.
func utf16NoBOM(s string, big bool) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		if big {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return b
}

// A UTF-16 file without a byte order mark is text, not binary: its NULs
// alternate with ASCII characters. A binary file (NULs in runs, bytes of
// every value) is still skipped.
func TestScanUTF16FileWithoutBOM(t *testing.T) {
	tok := jobToken(t)
	text := "# deploy settings\r\n$env:MAYFLY_TOKEN = '" + tok + "'\r\nWrite-Host done\r\n"
	elf := append([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00\x01\x00\x00\x00"), make([]byte, 64)...)
	tests := []struct {
		name    string
		content []byte
		want    bool
	}{
		{"UTF-16LE", utf16NoBOM(text, false), true},
		{"UTF-16BE", utf16NoBOM(text, true), true},
		{"UTF-16LE, é and ü", utf16NoBOM("# Schlüssel für café\r\n"+text, false), true},
		{"binary", append(elf, tok...), false},
	}
	s := newScanner(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "deploy.ps1"), tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			var found []string
			if _, err := s.ScanPaths(t.Context(), []string{dir}, func(f Finding) { found = append(found, f.Secret) }); err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(found, tok); got != tt.want {
				t.Errorf("token found: %v, want %v", got, tt.want)
			}
		})
	}
}
