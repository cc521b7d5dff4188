//go:build unix

package server

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A config path naming a device or a FIFO (a typo, /dev/zero) is refused
// at once: read whole, /dev/zero filled memory until the process died and
// a FIFO nobody writes hung the start for ever.
func TestLoadConfigFileNotRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", fifo} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := LoadConfigFile(path); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("LoadConfigFile(%s) = %v, want it refused as not a regular file", path, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("LoadConfigFile(%s) still reading after 10 s", path)
			}
		})
	}
}
