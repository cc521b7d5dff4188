package server

import (
	"context"
	"database/sql"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// An init --postgres interrupted (Ctrl-C: its context cancelled) after it
// made the keyring, a system secret and audit records, while it waits to
// store the first admin token, erases what it wrote: the database is as
// the schema alone left it, and init can be run again. Before, the files
// went but the keyring stayed, sealed by the deleted master key, and every
// later init was refused.
func TestInterruptedInitCanRunAgain(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	st, err := store.Open(context.Background(), store.Config{PostgresDSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fresh := tableDigests(t, db)

	// Hold the admin tokens table, so init stops at its last write.
	holder, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	var holderPID int
	if err := holder.QueryRow(`SELECT pg_backend_pid()`).Scan(&holderPID); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(`LOCK TABLE admin_tokens IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Init(ctx, InitOptions{DataDir: dir, Postgres: dsn})
		done <- err
	}()
	blocked := waitFor(t, done, func() []int { return blockedBy(t, db, holderPID) }, true)
	var keys int
	if err := db.QueryRow(`SELECT COUNT(*) FROM keyring`).Scan(&keys); err != nil || keys != 1 {
		t.Fatalf("init waits before making its keyring: %d %v", keys, err)
	}
	cancel() // Ctrl-C
	// Once init's write gave up, let its undo through. Its write gave up
	// when its session waits no more, or when the undo (a session of its
	// own) waits too: under load the cancel may reach PostgreSQL only
	// after init's client has closed that connection, and a session
	// waiting for a lock does not notice its client is gone.
	waitFor(t, done, func() []int {
		now := blockedBy(t, db, holderPID)
		for _, pid := range now {
			if !slices.Contains(blocked, pid) {
				return []int{0}
			}
		}
		for _, pid := range now {
			if slices.Contains(blocked, pid) {
				return nil
			}
		}
		return []int{0}
	}, true)
	holder.Rollback()
	interrupted := <-done
	if !errors.Is(interrupted, context.Canceled) {
		t.Fatalf("interrupted init: %v", interrupted)
	}
	if _, err := os.Stat(filepath.Join(dir, "master.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("master.key: %v", err)
	}
	if left := tableDigests(t, db); !maps.Equal(left, fresh) {
		t.Errorf("the interrupted init left rows behind:\n%v\nwant\n%v", left, fresh)
	}
	if _, err := Init(context.Background(), InitOptions{DataDir: dir, Postgres: dsn}); err != nil {
		t.Fatalf("init after an interrupted init: %v", err)
	}
	if !strings.Contains(interrupted.Error(), "was removed, so it can be run again") {
		t.Fatalf("the error does not say the database was cleaned up: %v", interrupted)
	}
}

// waitFor polls until probe returns something (or nothing, when want is
// false) and returns it; it fails the test if init ends first.
func waitFor(t *testing.T, done chan error, probe func() []int, want bool) []int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if got := probe(); (len(got) > 0) == want {
			return got
		}
		select {
		case err := <-done:
			t.Fatalf("init ended early: %v", err)
		default:
		}
	}
	t.Fatal("timed out")
	return nil
}

// blockedBy returns the sessions waiting for a lock that session pid holds.
func blockedBy(t *testing.T, db *sql.DB, pid int) []int {
	t.Helper()
	rows, err := db.Query(`SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var p int
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// tableDigests returns a digest of the rows of every table in the
// database's schema, by table.
func tableDigests(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	out := map[string]string{}
	for _, n := range tables {
		var d string
		if err := db.QueryRow(`SELECT md5(COALESCE(string_agg(t::text, ',' ORDER BY t::text), '')) FROM ` + n + ` t`).Scan(&d); err != nil {
			t.Fatal(err)
		}
		out[n] = d
	}
	return out
}

// A join refused for a key that does not open the database writes nothing
// to it: it checks both keys through read-only sessions before opening the
// store, which migrates the schema. Before, a newer mayfly run with a wrong
// key against a cluster of the previous release was refused but had moved
// the shared schema to its version, and every node of the cluster then
// refused to start ("database schema is version N, newer than this mayfly
// knows"). A join whose keys match brings the schema to its release.
func TestRefusedJoinLeavesTheSchema(t *testing.T) {
	ctx := context.Background()
	base := storetest.PostgresDSN(t)
	dsn := storetest.FreshSchema(t, base)
	first := datadir.Dir(filepath.Join(t.TempDir(), "first"))
	if _, err := Init(ctx, InitOptions{DataDir: string(first), Postgres: dsn}); err != nil {
		t.Fatal(err)
	}
	// Other keys: a data dir of another cluster.
	other := datadir.Dir(filepath.Join(t.TempDir(), "other"))
	if _, err := Init(ctx, InitOptions{DataDir: string(other), Postgres: storetest.FreshSchema(t, base)}); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	version := func() string {
		var v string
		if err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	prev, now := strconv.Itoa(store.SchemaVersion()-1), strconv.Itoa(store.SchemaVersion())
	for _, tc := range []struct {
		name          string
		master, audit string
		refused       bool
	}{
		{"wrong master key", other.MasterKey(), first.AuditKey(), true},
		{"wrong audit key", first.MasterKey(), other.AuditKey(), true},
		{"both keys match", first.MasterKey(), first.AuditKey(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The cluster as the previous release left it (the last step,
			// migration 17, only adds the table rotation_head).
			for _, q := range []string{`DROP TABLE IF EXISTS rotation_head`,
				`UPDATE meta SET value = '` + prev + `' WHERE key = 'schema_version'`} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			dir := filepath.Join(t.TempDir(), "joined")
			_, err := Join(ctx, JoinOptions{DataDir: dir, Postgres: dsn, MasterKeyFile: tc.master,
				AuditKeyFile: tc.audit, CACert: first.CACert(), CAKey: first.CAKey()})
			want := now
			if tc.refused {
				want = prev
				if !errors.Is(err, ErrKeyMismatch) {
					t.Fatalf("join: %v, want a key mismatch", err)
				}
				if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
					t.Errorf("refused join left its data dir: %v", serr)
				}
			} else if err != nil {
				t.Fatalf("join: %v", err)
			}
			if got := version(); got != want {
				t.Errorf("join (%v): schema version %s, want %s", err, got, want)
			}
		})
	}
}
