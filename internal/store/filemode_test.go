//go:build unix

package store_test

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// The SQLite file and its -wal and -shm files hold every lease, sealed
// secret and audit entry: another local user must never be able to open
// them, not even in the moment between their creation and a chmod (an
// open file stays open after the chmod). Under the common umask 022 a
// file created 0644 is readable by all: the files are watched from the
// moment Open starts, and the widest mode each ever had is checked.
func TestSQLiteFilesAreOwnerOnly(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mayfly.db")
	files := []string{path, path + "-wal", path + "-shm"}
	var (
		mu    sync.Mutex
		modes = map[string]os.FileMode{}
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			for _, f := range files {
				if fi, err := os.Stat(f); err == nil {
					mu.Lock()
					modes[f] |= fi.Mode().Perm()
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	db, err := store.Open(ctx, store.Config{Path: path})
	if err == nil {
		err = db.Ping(ctx)
		defer db.Close()
	}
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	for _, f := range files {
		m, ok := modes[f]
		if !ok {
			t.Errorf("%s was never seen (WAL mode makes all three)", filepath.Base(f))
			continue
		}
		if m&0o077 != 0 {
			t.Errorf("%s had mode %04o: another user could open it", filepath.Base(f), m)
		}
	}
}
