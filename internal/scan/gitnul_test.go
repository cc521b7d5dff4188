package scan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// scan --git judges a file binary by the file scanner's rule (a NUL in the
// first binarySniff bytes, here of the added content): a NUL further on
// must not drop the lines before it, a live token on line 1 included.
func TestGitNULAfterSniffKeepsFile(t *testing.T) {
	needGit(t)
	tok := jobToken(t)
	tests := []struct {
		name    string
		content string
		text    bool // the file scanner reads it, so the history scanner must too
	}{
		{"NUL after 8 KiB", "TOKEN=" + tok + "\n" + strings.Repeat("a", 9000) + "\nx\x00y\n", true},
		{"NUL in a later hunk line, far away", "TOKEN=" + tok + "\n" + strings.Repeat("log line\n", 2000) + "crash dump \x00\x00\n", true},
		{"NUL in the first 8 KiB", "TOKEN=" + tok + "\n" + strings.Repeat("log line\n", 100) + "\x00\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			gitRun(t, dir, "init", "-q", "-b", "main")
			if err := os.WriteFile(filepath.Join(dir, "app.log"), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			gitRun(t, dir, "add", ".")
			gitRun(t, dir, "commit", "-q", "-m", "add log")
			s := newScanner(t, Options{})

			var inFiles, inGit bool
			if _, err := s.ScanPaths(t.Context(), []string{filepath.Join(dir, "app.log")}, func(f Finding) { inFiles = inFiles || f.Secret == tok }); err != nil {
				t.Fatal(err)
			}
			if err := s.ScanGit(t.Context(), GitOptions{Dir: dir}, func(f Finding) { inGit = inGit || f.Secret == tok }); err != nil {
				t.Fatal(err)
			}
			if inFiles != tt.text || inGit != tt.text {
				t.Fatalf("token found by the file scanner: %v, by the history scanner: %v; want %v for both", inFiles, inGit, tt.text)
			}
		})
	}
}
