package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
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

// A data dir whose audit.key is not the one its database's log is signed
// with (a copied or regenerated key) is refused by every offline writer,
// as a server start is: it would otherwise sign entries another key's
// checkpoints must later cover. The refusal changes nothing.
func TestOfflineWritersRefuseAWrongAuditKey(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	t.Setenv("MAYFLY_MASTER_KEY", "")
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		write func(o OfflineOptions) error
	}{
		{"secret put", func(o OfflineOptions) error {
			_, err := PutSecretOffline(ctx, o, "gh", []byte("value"))
			return err
		}},
		{"admin token create", func(o OfflineOptions) error {
			_, _, err := CreateAdminTokenOffline(ctx, o, "back-in", "admin", 0)
			return err
		}},
	} {
		for _, v := range []struct{ backend, checkpoint string }{
			{"sqlite", "signed"}, {"sqlite", "none yet"}, {"postgres", "signed"}, {"postgres", "none yet"},
		} {
			backend := v.backend
			t.Run(tc.name+"/"+backend+"/checkpoint "+v.checkpoint, func(t *testing.T) {
				dsn := ""
				if backend == "postgres" {
					dsn = storetest.FreshSchema(t, storetest.PostgresDSN(t))
				}
				dir := filepath.Join(t.TempDir(), "data")
				if _, err := Init(ctx, InitOptions{DataDir: dir, Postgres: dsn}); err != nil {
					t.Fatal(err)
				}
				d := datadir.Dir(dir)
				size := func() int {
					st, err := store.Open(ctx, store.Config{Path: d.Database(), PostgresDSN: dsn})
					if err != nil {
						t.Fatal(err)
					}
					defer st.Close()
					lines, err := st.AuditEntries(ctx, 0, 1000)
					if err != nil {
						t.Fatal(err)
					}
					var pending int
					if err := st.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil {
						t.Fatal(err)
					}
					return len(lines) + pending
				}
				if v.checkpoint == "none yet" {
					// As a log is before its first checkpoint is signed: only
					// the database's recorded verifier key can tell.
					st, err := store.Open(ctx, store.Config{Path: d.Database(), PostgresDSN: dsn})
					if err != nil {
						t.Fatal(err)
					}
					_, err = st.SQL().ExecContext(ctx, `DELETE FROM audit_checkpoints`)
					st.Close()
					if err != nil {
						t.Fatal(err)
					}
				}
				before := size()
				other, _, err := audit.GenerateKey(audit.DefaultOrigin)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(d.AuditKey(), []byte(other+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := tc.write(OfflineOptions{DataDir: dir, Postgres: dsn}); !errors.Is(err, ErrKeyMismatch) {
					t.Fatalf("with another audit key: %v, want a key mismatch", err)
				}
				if got := size(); got != before {
					t.Errorf("the refused write changed the log: %d entries, was %d", got, before)
				}
			})
		}
	}
}

// A credential passed as the name is refused before the data dir is
// opened, and the refusal does not quote it.
func TestPutSecretOfflineRefusesACredentialAsName(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	t.Setenv("MAYFLY_MASTER_KEY", "")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	tok, err := token.New(token.Admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		ok   bool
	}{{"gh", true}, {tok, false}} {
		_, err := PutSecretOffline(ctx, OfflineOptions{DataDir: dir}, tt.name, []byte("v"))
		if (err == nil) != tt.ok {
			t.Fatalf("%s: %v, want ok=%v", token.Hint(tt.name), err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), tt.name) {
			t.Fatalf("the refusal quotes the credential: %v", err)
		}
	}
}
