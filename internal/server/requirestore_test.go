package server

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// startAndOffline runs what opens a data dir's store: the server, and the
// offline secret put and admin token create. Each must refuse, with want in
// its error, and its refusal must leave no store behind.
func startAndOffline(t *testing.T, dir, dsn, want string) {
	t.Helper()
	ctx := context.Background()
	s, err := New(ctx, Config{DataDir: dir, Postgres: dsn, Listen: "127.0.0.1:0", MetricsListen: "off"}, NewLogger(&lockedWriter{w: &strings.Builder{}}, "text", "error"))
	if err == nil {
		s.Close(ctx)
	}
	_, perr := PutSecretOffline(ctx, OfflineOptions{DataDir: dir, Postgres: dsn}, "gh", []byte("a-secret-value-0123456789")) // mayfly:allow
	_, _, aerr := CreateAdminTokenOffline(ctx, OfflineOptions{DataDir: dir, Postgres: dsn}, "rescue", "admin", time.Hour)
	for what, err := range map[string]error{"server": err, "secret put --data-dir": perr, "admin token create --data-dir": aerr} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a refusal saying %q", what, err, want)
		}
	}
}

// A data dir's store is the one init made. A server (or an offline
// command) started on none of it — the --postgres forgotten, a mistyped
// DSN, a deleted mayfly.db — once made a new, empty store and served it,
// signing a second log with the data dir's audit key; now it refuses.
func TestStartRefusesAStoreInitNeverMade(t *testing.T) {
	t.Run("sqlite file missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"", "-wal", "-shm"} {
			os.Remove(datadir.Dir(dir).Database() + f)
		}
		startAndOffline(t, dir, "", "mayfly.db is missing")
		if _, err := os.Stat(datadir.Dir(dir).Database()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused start made %s: %v", datadir.Dir(dir).Database(), err)
		}
	})
	if os.Getenv("MAYFLY_TEST_POSTGRES") == "" {
		t.Skip("MAYFLY_TEST_POSTGRES not set: the PostgreSQL cases")
	}
	base := storetest.PostgresDSN(t)
	t.Run("postgres data dir without --postgres", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := Init(context.Background(), InitOptions{DataDir: dir, Postgres: storetest.FreshSchema(t, base)}); err != nil {
			t.Fatal(err)
		}
		startAndOffline(t, dir, "", "--postgres")
		if _, err := os.Stat(datadir.Dir(dir).Database()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused start made %s: %v", datadir.Dir(dir).Database(), err)
		}
	})
	for _, tc := range []struct{ name, initDSN string }{
		{"another, empty database", storetest.FreshSchema(t, base)},
		{"sqlite data dir on an empty database", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if _, err := Init(context.Background(), InitOptions{DataDir: dir, Postgres: tc.initDSN}); err != nil {
				t.Fatal(err)
			}
			empty := storetest.FreshSchema(t, base)
			startAndOffline(t, dir, empty, "holds no mayfly store")
			db, err := sql.Open("pgx", empty)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var tables int
			if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&tables); err != nil || tables != 0 {
				t.Errorf("a refused start wrote to the empty database: %d tables, %v", tables, err)
			}
		})
	}
}
