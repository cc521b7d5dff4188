package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A start (or offline command) with a master key that is not the data
// dir's is refused before anything is written: it used to migrate the
// store's schema first, so that after an upgrade started with the wrong
// MAYFLY_MASTER_KEY the release rolled back to refused the database as
// newer than it knows, though the new one never ran.
func TestWrongMasterKeyChangesNothing(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	backends := []struct{ name, dsn string }{{"sqlite", ""}}
	if os.Getenv("MAYFLY_TEST_POSTGRES") != "" {
		backends = append(backends, struct{ name, dsn string }{"postgres", storetest.FreshSchema(t, storetest.PostgresDSN(t))})
	}
	// The newest migration's inverse: the store as the release before it
	// left it. (A new migration needs its inverse here.)
	const newest = 17
	undoNewest := []string{`DROP TABLE rotation_head`, `UPDATE meta SET value = '16' WHERE key = 'schema_version'`}
	if store.SchemaVersion() != newest {
		t.Fatalf("the store's schema is version %d: give this test the inverse of its newest migration", store.SchemaVersion())
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			t.Setenv("MAYFLY_MASTER_KEY", "")
			dir := filepath.Join(t.TempDir(), "data")
			if _, err := Init(ctx, InitOptions{DataDir: dir, Postgres: b.dsn}); err != nil {
				t.Fatal(err)
			}
			cfg := store.Config{Path: datadir.Dir(dir).Database(), PostgresDSN: b.dsn}
			st, err := store.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range undoNewest {
				if _, err := st.SQL().ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			st.Close()

			other := make([]byte, 32)
			rand.Read(other)
			t.Setenv("MAYFLY_MASTER_KEY", base64.StdEncoding.EncodeToString(other))
			startAndOffline(t, dir, b.dsn, "master key does not open the keyring")

			ro, err := store.OpenReadOnly(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if v := ro.SchemaVersion(); v != newest-1 {
				t.Errorf("a start refused for its master key migrated the store to schema %d", v)
			}
		})
	}
}

// A keyring version the data dir's own key does not open, beside ones it
// does, is a row changed in the store, not the operator's wrong key: the
// refusal names that version rather than blaming the key.
func TestPlantedKeyringVersionIsNamed(t *testing.T) {
	t.Setenv("MAYFLY_POSTGRES", "")
	t.Setenv("MAYFLY_MASTER_KEY", "")
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Config{Path: datadir.Dir(dir).Database()})
	if err != nil {
		t.Fatal(err)
	}
	planted := make([]byte, 60)
	rand.Read(planted)
	if err := st.AddKeyVersion(ctx, store.KeyVersion{Version: 2, Sealed: planted, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off"}, NewLogger(&lockedWriter{w: &strings.Builder{}}, "text", "error"))
	if err == nil {
		s.Close(ctx)
		t.Fatal("started on a keyring with a version its key does not open")
	}
	if !strings.Contains(err.Error(), "keyring version 2") || strings.Contains(err.Error(), "not this store's") {
		t.Errorf("refusal: %v; want it to name keyring version 2, not blame the key", err)
	}
}
