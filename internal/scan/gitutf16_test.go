package scan

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A UTF-16 file committed to a repository (Windows PowerShell's Out-File
// and ">" write UTF-16LE with a byte order mark; git checks such a file in
// as it is unless told otherwise) is read by scan --git and --staged as the
// file scanner reads it on disk, not skipped as binary.
func TestGitUTF16File(t *testing.T) {
	needGit(t)
	tok := jobToken(t)
	text := "# saved by Out-File\r\n$env:MAYFLY_TOKEN = '" + tok + "'\r\nWrite-Host done\r\n"
	tests := []struct {
		name    string
		content []byte
		staged  bool
	}{
		{"BOM, history", utf16Bytes(text, false), false},
		{"BOM, staged", utf16Bytes(text, false), true},
		{"big-endian BOM, history", utf16Bytes(text, true), false},
		{"no BOM, history", utf16NoBOM(text, false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			gitRun(t, dir, "init", "-q", "-b", "main")
			if err := os.WriteFile(filepath.Join(dir, "settings.ps1"), tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			gitRun(t, dir, "add", ".")
			s := newScanner(t, Options{})
			var found []string
			emit := func(f Finding) { found = append(found, f.Secret) }
			var err error
			if tt.staged {
				err = s.ScanStaged(t.Context(), dir, emit)
			} else {
				gitRun(t, dir, "commit", "-q", "-m", "settings")
				err = s.ScanGit(t.Context(), GitOptions{Dir: dir}, emit)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(found, tok) {
				t.Errorf("token not found (%d findings)", len(found))
			}
		})
	}
}
