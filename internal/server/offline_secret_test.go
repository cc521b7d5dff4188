package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A secret stored through the data dir commits together with its audit
// entry: when the entry cannot be written the secret is not stored, and
// when it is stored its entry is in the log (not pending) by the time
// PutSecretOffline returns.
func TestPutSecretOfflineRecordsWithTheWrite(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	t.Setenv("MAYFLY_MASTER_KEY", "")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	withStore := func(fn func(st *store.DB)) {
		t.Helper()
		st, err := store.Open(ctx, store.Config{Path: datadir.Dir(dir).Database()})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		fn(st)
	}
	exec := func(st *store.DB, q string) {
		t.Helper()
		if _, err := st.SQL().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	withStore(func(st *store.DB) {
		exec(st, `CREATE TRIGGER no_records BEFORE INSERT ON audit_pending BEGIN SELECT RAISE(ABORT, 'injected'); END`)
	})
	if _, err := PutSecretOffline(ctx, OfflineOptions{DataDir: dir}, "gh", []byte("first")); !errors.Is(err, store.ErrNoteFailed) {
		t.Fatalf("put while the entry cannot be written: %v", err)
	}
	withStore(func(st *store.DB) {
		if _, err := st.GetSecret(ctx, "gh"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the secret was stored without its entry: %v", err)
		}
		exec(st, `DROP TRIGGER no_records`)
	})
	v, err := PutSecretOffline(ctx, OfflineOptions{DataDir: dir}, "gh", []byte("second"))
	if err != nil || v != 1 {
		t.Fatalf("put = %d, %v", v, err)
	}
	withStore(func(st *store.DB) {
		lines, err := st.AuditEntries(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range lines {
			e, err := audit.ParseEntry(line)
			if err != nil {
				t.Fatal(err)
			}
			if e.Type == audit.TypeSecretWrite && e.Secret == "gh" && e.Admin == "local" {
				n++
			}
		}
		var pending int
		if err := st.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if n != 1 || pending != 0 {
			t.Fatalf("%d entries of the write in the log, %d pending; want 1 and 0", n, pending)
		}
	})
}

// On PostgreSQL an offline put goes through the shared sequencer like a
// node's entries, so it can never race a running cluster for an index:
// its entry is placed (none left pending) and the log stays contiguous.
func TestPutSecretOfflinePostgres(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	t.Setenv("MAYFLY_MASTER_KEY", "")
	ctx := context.Background()
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir, Postgres: dsn}); err != nil {
		t.Fatal(err)
	}
	for i, v := range []string{"first", "second"} {
		if got, err := PutSecretOffline(ctx, OfflineOptions{DataDir: dir, Postgres: dsn}, "gh", []byte(v)); err != nil || got != i+1 {
			t.Fatalf("put %d = %d, %v", i, got, err)
		}
	}
	st, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lines, err := st.AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	for i, line := range lines {
		e, err := audit.ParseEntry(line)
		if err != nil || e.Index != int64(i) {
			t.Fatalf("entry %d: index %d, %v", i, e.Index, err)
		}
		if e.Type == audit.TypeSecretWrite && e.Secret == "gh" {
			writes++
		}
	}
	var pending int
	if err := st.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if writes != 2 || pending != 0 {
		t.Fatalf("%d entries of the writes in the log, %d pending; want 2 and 0", writes, pending)
	}
}
