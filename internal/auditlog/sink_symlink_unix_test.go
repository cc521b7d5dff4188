//go:build unix

package auditlog

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file sink refuses a symbolic link at its path: someone able to write
// to the sink's folder could otherwise point it at any file the server may
// write (its store, a key), which the server then appended entries to or
// cut back to its last line end, or at a path where the server created a
// file. Before, the link was followed. Neither the link's target nor the
// link changes, and the error says why.
func TestFileSinkRefusesSymlink(t *testing.T) {
	const victimText = "a file of the server's, not ending in a newline"
	for _, tc := range []struct {
		name     string
		existing bool // the link points at an existing file
	}{
		{"to an existing file", true},
		{"to a file to be made", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(t.TempDir(), "victim")
			if tc.existing {
				if err := os.WriteFile(victim, []byte(victimText), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "audit.jsonl")
			if err := os.Symlink(victim, path); err != nil {
				t.Fatal(err)
			}
			s, err := NewFileSink(path, FileSinkOptions{})
			if err == nil {
				s.Write(context.Background(), sampleEntries(2), 0)
				s.Close()
				t.Fatal("a sink file that is a symbolic link was opened")
			}
			if !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), path) {
				t.Errorf("the refusal does not say the path is a symbolic link: %v", err)
			}
			b, rerr := os.ReadFile(victim)
			switch {
			case tc.existing && (rerr != nil || string(b) != victimText):
				t.Errorf("the link's target changed: %q, %v", b, rerr)
			case !tc.existing && !errors.Is(rerr, fs.ErrNotExist):
				t.Errorf("the link's target was made: %q, %v", b, rerr)
			}
			if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the link itself changed: %v, %v", fi, err)
			}
		})
	}
}
