package store_test

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// roBackend is a database for the read-only tests: its store config and
// a plain read-write handle on it for setting up and looking (no store).
type roBackend struct {
	name string
	cfg  store.Config
	raw  *sql.DB
}

// q rewrites ? placeholders as the backend wants them.
func (b roBackend) q(s string) string {
	if b.cfg.PostgresDSN == "" {
		return s
	}
	for n := 1; strings.Contains(s, "?"); n++ {
		s = strings.Replace(s, "?", "$"+strconv.Itoa(n), 1)
	}
	return s
}

func (b roBackend) exec(t *testing.T, s string, args ...any) {
	t.Helper()
	if _, err := b.raw.ExecContext(ctx, b.q(s), args...); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
}

// fingerprint is what must not change when the database is only read:
// the recorded schema version and the schema's tables and indexes, and on
// SQLite the database file's bytes.
func (b roBackend) fingerprint(t *testing.T) string {
	t.Helper()
	var v []byte
	if err := b.raw.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil {
		t.Fatalf("schema version: %v", err)
	}
	var objects int
	q := `SELECT COUNT(*) FROM sqlite_master`
	if b.cfg.PostgresDSN != "" {
		q = `SELECT (SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()) + (SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema())`
	}
	if err := b.raw.QueryRowContext(ctx, q).Scan(&objects); err != nil {
		t.Fatalf("schema objects: %v", err)
	}
	fp := fmt.Sprintf("schema %s, %d tables and indexes", v, objects)
	if b.cfg.PostgresDSN == "" {
		data, err := os.ReadFile(b.cfg.Path)
		if err != nil {
			t.Fatal(err)
		}
		fp += fmt.Sprintf(", file %x", sha256.Sum256(data))
	}
	return fp
}

// roMaker makes a fresh database of one backend: setup fills it through
// the raw handle, which is then closed and reopened (on SQLite every write
// of setup is then in the file itself, not in a WAL).
type roMaker struct {
	name string
	make func(t *testing.T, setup func(b roBackend)) roBackend
}

func readOnlyBackends() []roMaker {
	out := []roMaker{{"sqlite", func(t *testing.T, setup func(b roBackend)) roBackend {
		path := filepath.Join(t.TempDir(), "mayfly.db")
		b := roBackend{name: "sqlite", cfg: store.Config{Path: path}}
		var err error
		if b.raw, err = sql.Open("sqlite", "file:"+path); err != nil {
			t.Fatal(err)
		}
		setup(b)
		b.raw.Close() // the last connection folds the WAL into the file
		if b.raw, err = sql.Open("sqlite", "file:"+path); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.raw.Close() })
		return b
	}}}
	return append(out, roMaker{"postgres", func(t *testing.T, setup func(b roBackend)) roBackend {
		dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
		b := roBackend{name: "postgres", cfg: store.Config{PostgresDSN: dsn}}
		var err error
		if b.raw, err = sql.Open("pgx", dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.raw.Close() })
		setup(b)
		return b
	}})
}

// An offline reader neither migrates nor writes: the database reads the
// same before and after, at an older schema too; a schema newer than the
// binary, or too old to read, is refused and left as it was.
func TestOpenReadOnly(t *testing.T) {
	hash := func(i byte) []byte { return bytes.Repeat([]byte{i}, 32) }
	const older = "older schema, read as it is"
	cases := []struct {
		name   string
		schema int // created at this version (0: the current one; -1: a meta table without a version)
		edit   func(t *testing.T, b roBackend)
		want   string // in the error; "" when it opens
	}{
		{name: "current schema"},
		{name: older, schema: store.SchemaVersion() - 1},
		{name: "oldest schema read", schema: 3},
		{name: "newer schema", edit: func(t *testing.T, b roBackend) {
			b.exec(t, `UPDATE meta SET value = ? WHERE key = 'schema_version'`, []byte(strconv.Itoa(store.SchemaVersion()+1)))
		}, want: "newer than this mayfly knows"},
		{name: "schema too old to read", schema: 2, want: "older than this mayfly reads"},
		{name: "no schema", schema: -1, want: "no mayfly schema"},
	}
	for _, m := range readOnlyBackends() {
		t.Run(m.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					b := m.make(t, func(b roBackend) {
						switch {
						case c.schema >= 0:
							v := c.schema
							if v == 0 {
								v = store.SchemaVersion()
							}
							if err := store.CreateAtSchema(ctx, b.cfg, v); err != nil {
								t.Fatal(err)
							}
						default:
							blob := "BLOB"
							if b.cfg.PostgresDSN != "" {
								blob = "BYTEA"
							}
							b.exec(t, `CREATE TABLE meta (key TEXT PRIMARY KEY, value `+blob+` NOT NULL)`)
							b.exec(t, `INSERT INTO meta (key, value) VALUES ('schema_version', ?)`, []byte("0"))
						}
						if c.want == "" {
							b.exec(t, `INSERT INTO audit_entries (idx, data) VALUES (0, ?), (1, ?), (2, ?)`, []byte(`{"index":0}`), []byte(`{"index":1}`), []byte(`{"index":2}`))
							b.exec(t, `INSERT INTO audit_hash_runs (first_id, hashes) VALUES (0, ?)`, bytes.Join([][]byte{hash(1), hash(2), hash(3), hash(4)}, nil))
							b.exec(t, `INSERT INTO audit_checkpoints (size, note) VALUES (3, ?)`, []byte("note"))
						}
						if c.edit != nil {
							c.edit(t, b)
						}
					})
					before := b.fingerprint(t)
					ro, err := store.OpenReadOnly(ctx, store.Config{Path: b.cfg.Path, PostgresDSN: b.cfg.PostgresDSN, ReadMmap: 1 << 30})
					if c.want != "" {
						if err == nil {
							ro.Close()
							t.Fatalf("opened; want an error with %q", c.want)
						}
						if !strings.Contains(err.Error(), c.want) {
							t.Fatalf("error %q does not say %q", err, c.want)
						}
					} else {
						if err != nil {
							t.Fatal(err)
						}
						readAll(t, ro, b, c.schema)
					}
					if after := b.fingerprint(t); after != before {
						t.Fatalf("the database changed: %s, was %s", after, before)
					}
					if c.name == older {
						// The fingerprint sees a migration: opening
						// to write migrates and changes it.
						db, err := store.Open(ctx, b.cfg)
						if err != nil {
							t.Fatal(err)
						}
						db.Close()
						if after := b.fingerprint(t); after == before {
							t.Fatalf("Open migrated to %d and the fingerprint did not change", store.SchemaVersion())
						}
					}
				})
			}
		})
	}
}

// readAll reads the log TestOpenReadOnly wrote through every read of a
// read-only handle, tries a write (refused), and closes it.
func readAll(t *testing.T, ro *store.ReadOnly, b roBackend, schema int) {
	t.Helper()
	defer func() {
		if err := ro.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	if schema == 0 {
		schema = store.SchemaVersion()
	}
	if ro.SchemaVersion() != schema || ro.Backend() != b.name {
		t.Errorf("SchemaVersion, Backend = %d, %s; want %d, %s", ro.SchemaVersion(), ro.Backend(), schema, b.name)
	}
	if n, err := ro.AuditSize(ctx); err != nil || n != 3 {
		t.Errorf("AuditSize = %d, %v", n, err)
	}
	var got []string
	if err := ro.ScanAuditEntries(ctx, 1, 5, func(data []byte) error { got = append(got, string(data)); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != `{"index":1} {"index":2}` {
		t.Errorf("ScanAuditEntries = %q", got)
	}
	if es, err := ro.AuditEntries(ctx, 0, 1); err != nil || len(es) != 1 || string(es[0]) != `{"index":0}` {
		t.Errorf("AuditEntries = %q, %v", es, err)
	}
	if hs, err := ro.AuditHashes(ctx, []int64{1, 2, 3}); err != nil || hs[0][0] != 2 || hs[2][0] != 4 {
		t.Errorf("AuditHashes = %v, %v", hs, err)
	}
	if size, note, err := ro.LatestAuditCheckpoint(ctx); err != nil || size != 3 || string(note) != "note" {
		t.Errorf("LatestAuditCheckpoint = %d %q %v", size, note, err)
	}
	if note, err := ro.AuditCheckpoint(ctx, 3); err != nil || string(note) != "note" {
		t.Errorf("AuditCheckpoint = %q %v", note, err)
	}
	// The connections refuse a write by themselves.
	if _, err := ro.SQL().ExecContext(ctx, b.q(`INSERT INTO meta (key, value) VALUES (?, ?)`), "written", []byte("x")); err == nil {
		t.Error("a read-only handle wrote to meta")
	}
}

// A missing SQLite file is an error, not a new empty store.
func TestOpenReadOnlyMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mayfly.db")
	if ro, err := store.OpenReadOnly(ctx, store.Config{Path: path}); err == nil {
		ro.Close()
		t.Fatal("opened a missing file")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the missing file was created: %v", err)
	}
}

// A data dir's name may hold the characters a file: URI gives a meaning
// to; each must name the file, both read-write and read-only.
func TestOpenSQLiteURIChars(t *testing.T) {
	for _, dir := range []string{"q?mark", "hash#dir", "pct%41x", "sp ace", "amp&x=1"} {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), dir, "mayfly.db")
			db, err := store.Open(ctx, store.Config{Path: path})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			db.Close()
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("the database is not at its path: %v", err)
			}
			entries, _ := os.ReadDir(filepath.Dir(filepath.Dir(path)))
			if len(entries) != 1 {
				t.Fatalf("files beside the data dir: %v", entries)
			}
			ro, err := store.OpenReadOnly(ctx, store.Config{Path: path})
			if err != nil {
				t.Fatalf("open read-only: %v", err)
			}
			ro.Close()
		})
	}
}
