package store

import (
	"context"
	"path/filepath"
	"testing"
)

// A durable commit is on the disk, not in its cache, when it returns: on
// macOS, fsync leaves it in the drive's cache and SQLite asks for
// F_FULLFSYNC only with fullfsync set (elsewhere the setting is a no-op).
func TestSQLiteDurabilitySettings(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "mayfly.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL
		{"fullfsync", "1"},
	} {
		var got string
		if err := db.write.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %s, want %s", tc.pragma, got, tc.want)
		}
	}
}
