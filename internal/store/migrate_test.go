package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A database written by schema version 1 is brought to the current version
// with its audit log intact, and its audit tables keyed by the row id.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	old, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	d := &DB{}
	for _, stmt := range strings.Split(d.dialect(migrations()[0].sqlite), ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := old.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	setup := []string{
		`INSERT INTO meta (key, value) VALUES ('schema_version', '1')`,
		`INSERT INTO audit_entries (idx, data) VALUES (0, x'7b7d'), (1, x'5b5d')`,
		`INSERT INTO audit_hashes (id, hash) VALUES (0, zeroblob(32)), (1, zeroblob(32)), (2, x'03' || zeroblob(31))`,
		`INSERT INTO audit_checkpoints (size, note) VALUES (2, x'6e')`,
	}
	for _, q := range setup {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()

	db, err := Open(ctx, Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, err := db.AuditSize(ctx); err != nil || n != 2 {
		t.Fatalf("size after migration = %d %v", n, err)
	}
	es, err := db.AuditEntries(ctx, 0, 10)
	if err != nil || len(es) != 2 || string(es[0]) != "{}" || string(es[1]) != "[]" {
		t.Fatalf("entries after migration = %q %v", es, err)
	}
	hs, err := db.AuditHashes(ctx, []int64{2})
	if err != nil || hs[0][0] != 3 {
		t.Fatalf("hashes after migration = %v %v", hs, err)
	}
	if size, note, err := db.LatestAuditCheckpoint(ctx); err != nil || size != 2 || !bytes.Equal(note, []byte("n")) {
		t.Fatalf("checkpoint after migration = %d %q %v", size, note, err)
	}
	for _, table := range []string{"audit_entries", "audit_hashes", "audit_checkpoints", "audit_hash_runs"} {
		var ddl string
		if err := db.read.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE name = ?`, table).Scan(&ddl); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ddl, "INTEGER PRIMARY KEY") {
			t.Errorf("%s not keyed by the row id: %s", table, ddl)
		}
	}
	var v []byte
	db.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
	if string(v) != strconv.Itoa(SchemaVersion()) {
		t.Fatalf("schema version %s", v)
	}
	// Appends go to hash runs; hashes of the old rows and the new runs
	// read together, in a range and one by one.
	if err := db.AppendAudit(ctx, 2, [][]byte{[]byte(`{"index":2}`)}, 3, [][32]byte{{9}}, AuditDurable); err != nil {
		t.Fatal(err)
	}
	for _, idx := range [][]int64{{0, 1, 2, 3}, {3, 2, 0}, {3}} {
		hs, err := db.AuditHashes(ctx, idx)
		if err != nil {
			t.Fatalf("hashes %v after an append = %v", idx, err)
		}
		for i, x := range idx {
			want := [32]byte{}
			switch x {
			case 2:
				want[0] = 3
			case 3:
				want[0] = 9
			}
			if hs[i] != want {
				t.Fatalf("hash %d = %x, want %x", x, hs[i][:2], want[:2])
			}
		}
	}
	if _, err := db.AuditHashes(ctx, []int64{3, 4}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hash past the end: %v", err)
	}
}
