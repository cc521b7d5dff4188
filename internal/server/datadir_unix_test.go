//go:build unix

package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// init into a data dir that others may write to, or that another user
// made ahead of time, is refused and writes nothing: otherwise that user
// could later put a CA and server key of their own in place of init's.
func TestInitRefusesADirOthersMayChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode os.FileMode
		uid  int
	}{
		{"anyone may write", 0o777, -1},
		{"sticky, anyone may add", 0o777 | os.ModeSticky, -1},
		{"another user's", 0o777, 65534},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.uid >= 0 {
				if os.Geteuid() == tc.uid {
					t.Skip("that user runs the test")
				}
				if err := os.Chown(dir, tc.uid, -1); err != nil {
					t.Skipf("chown needs root: %v", err)
				}
			}
			_, err := Init(context.Background(), InitOptions{DataDir: dir})
			if err == nil || errors.Is(err, ErrInitialised) {
				t.Fatalf("Init in a dir mode %v = %v, want a refusal", tc.mode, err)
			}
			if left, _ := os.ReadDir(dir); len(left) > 0 {
				t.Fatalf("a refused init left %d files", len(left))
			}
		})
	}
}
