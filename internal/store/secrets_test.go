package store_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// On a shared PostgreSQL, deleting a keyring version and writing a row
// sealed under it, on two nodes at once, never leave a row whose keyring
// version is gone: whichever transaction holds the keyring row first, the
// other sees its outcome once it commits. Each case holds one side open in
// a transaction of its own (as another node's would be) and runs the
// other side against it.
func TestKeyVersionDeleteRacesSealedWrite(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// held runs in the open transaction, as the first node's.
		held []string
		// then runs on the store while held is open.
		then    func(db *store.DB) error
		wantErr error
		// wantKeyring is whether keyring version 1 exists afterwards.
		wantKeyring bool
	}{
		{"write in flight, then delete",
			[]string{`SELECT 1 FROM keyring WHERE version = 1 FOR SHARE`,
				`INSERT INTO secrets (name, version, kek_version, wrapped_dek, ciphertext, created_at) VALUES ('s', 1, 1, 'w', 'c', 1)`},
			func(db *store.DB) error { return db.DeleteKeyVersion(ctx, 1) },
			store.ErrConflict, true},
		{"delete in flight, then write",
			[]string{`SELECT 1 FROM keyring WHERE version = 1 FOR UPDATE`, `DELETE FROM keyring WHERE version = 1`},
			func(db *store.DB) error {
				return db.PutSecret(ctx, store.Secret{Name: "s", Version: 1, KEKVersion: 1, WrappedDEK: []byte("w"), Ciphertext: []byte("c"), CreatedAt: time.Now()})
			},
			store.ErrKeyVersionGone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := storetest.Postgres(t)
			db := b.DB
			if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: 1, Sealed: []byte("s1"), CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			other := b.Another(t).SQL()
			tx, err := other.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			var holder int
			if err := tx.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&holder); err != nil {
				t.Fatal(err)
			}
			for _, q := range tt.held {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- tt.then(db) }()
			// Commit the held side once the other waits for it (or has
			// finished without waiting: the race the lock is there for).
			var got error
			finished := false
			for deadline := time.Now().Add(20 * time.Second); !finished; {
				select {
				case got = <-done:
					finished = true
					continue
				default:
				}
				if waiting(t, other, holder) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("neither waited nor finished")
				}
				time.Sleep(2 * time.Millisecond)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if !finished {
				got = <-done
			}
			if !errors.Is(got, tt.wantErr) {
				t.Fatalf("got %v, want %v", got, tt.wantErr)
			}
			kvs, err := db.KeyVersions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if has := len(kvs) == 1; has != tt.wantKeyring {
				t.Fatalf("keyring %+v, want version 1 kept: %v", kvs, tt.wantKeyring)
			}
			if use, err := db.KeyVersionsInUse(ctx); err != nil || (!tt.wantKeyring && use[1] != 0) {
				t.Fatalf("a row is sealed under deleted keyring version 1: %v %v", use, err)
			}
		})
	}
}

// waiting reports whether some session waits for a lock held by the
// session with process id holder.
func waiting(t *testing.T, db *sql.DB, holder int) bool {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holder).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}
