// Package storetest opens real stores for tests: SQLite in a temporary
// folder, and PostgreSQL in a fresh schema when MAYFLY_TEST_POSTGRES names a
// database. It never touches data outside what it creates.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// Backend is one opened store with its name, for table-driven tests.
type Backend struct {
	Name string
	DB   *store.DB
	// Reopen closes DB and opens the same database again (for restart and
	// crash-recovery tests). It returns the new handle.
	Reopen func(t testing.TB) *store.DB
	// Another opens a second handle on the same database, as another
	// node of a cluster would (closed at cleanup).
	Another func(t testing.TB) *store.DB
}

// Backends returns SQLite, and PostgreSQL when configured. In CI
// (CI=true) a missing MAYFLY_TEST_POSTGRES fails the test.
func Backends(t testing.TB) []Backend {
	t.Helper()
	out := []Backend{SQLite(t)}
	if pg, ok := postgres(t); ok {
		out = append(out, pg)
	}
	return out
}

// SQLite opens a fresh SQLite store in t.TempDir().
func SQLite(t testing.TB) Backend {
	t.Helper()
	return backend(t, "sqlite", store.Config{Path: filepath.Join(t.TempDir(), "mayfly.db")})
}

// backend opens the store cfg names.
func backend(t testing.TB, name string, cfg store.Config) Backend {
	t.Helper()
	b := Backend{Name: name}
	b.DB = open(t, cfg)
	b.Reopen = func(t testing.TB) *store.DB {
		b.DB.Close()
		b.DB = open(t, cfg)
		return b.DB
	}
	b.Another = func(t testing.TB) *store.DB { return open(t, cfg) }
	return b
}

// PostgresDSN returns MAYFLY_TEST_POSTGRES, skipping the test when it is
// unset outside CI and failing it in CI.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("MAYFLY_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("MAYFLY_TEST_POSTGRES is not set in CI: PostgreSQL tests must run")
		}
		t.Skip("MAYFLY_TEST_POSTGRES not set")
	}
	return dsn
}

// Postgres opens a store in a fresh schema of the test database; the
// schema is dropped when the test ends. Without MAYFLY_TEST_POSTGRES it
// skips the test (fails it in CI).
func Postgres(t testing.TB) Backend {
	t.Helper()
	b, ok := postgres(t)
	if !ok {
		t.Skip("MAYFLY_TEST_POSTGRES is not set")
	}
	return b
}

func postgres(t testing.TB) (Backend, bool) {
	t.Helper()
	dsn := os.Getenv("MAYFLY_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("MAYFLY_TEST_POSTGRES is not set in CI: PostgreSQL tests must run")
		}
		return Backend{}, false
	}
	return backend(t, "postgres", store.Config{PostgresDSN: FreshSchema(t, dsn)}), true
}

// FreshSchema creates a new schema in the database dsn names and returns a
// DSN whose search_path is that schema. The schema is dropped at cleanup.
func FreshSchema(t testing.TB, dsn string) string {
	t.Helper()
	var rnd [6]byte
	rand.Read(rnd[:])
	schema := "mayfly_test_" + hex.EncodeToString(rnd[:])
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		admin.Close()
		t.Fatalf("postgres: create schema: %v", err)
	}
	t.Cleanup(func() {
		admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		admin.Close()
	})
	return withParam(t, dsn, "search_path", schema)
}

func withParam(t testing.TB, dsn, k, v string) string {
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("postgres dsn: %v", err)
		}
		q := u.Query()
		q.Set(k, v)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + k + "=" + v
}

func open(t testing.TB, cfg store.Config) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// LeaseReadsDown is db with its reads of a lease by token hash failing, as
// they do while the database is unreachable: for tests of how a caller
// answers a token it does not hold when it cannot look it up.
type LeaseReadsDown struct{ *store.DB }

func (LeaseReadsDown) LeaseByHash(context.Context, [32]byte) (store.Lease, error) {
	return store.Lease{}, errors.New("store down")
}
