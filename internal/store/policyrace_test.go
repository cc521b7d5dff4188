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

// waitBlockedBy returns once a session of db waits for a lock that the
// session pid holds.
func waitBlockedBy(t *testing.T, db *store.DB, pid int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing waited for the open transaction")
		}
	}
}

// openTx begins a transaction on a connection of its own and returns it
// with that session's pid.
func openTx(t *testing.T, db *store.DB) (*sql.Tx, int) {
	t.Helper()
	tx, err := db.SQL().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	var pid int
	if err := tx.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return tx, pid
}

// Issue 18 item 4, the race itself, on two nodes of one PostgreSQL: a
// lease decided against a version while an apply of the next one is
// committing waits for it and is then refused (ErrPolicyChanged); an apply
// that starts while such a lease is committing waits for it and then
// revokes it with the grant it removes. Either way no lease of a removed
// grant outlives the apply (a zombie token).
func TestPolicyApplyRacesLeaseInsert(t *testing.T) {
	b := storetest.Postgres(t)
	nodeA, nodeB := b.DB, b.Another(t)
	if _, err := nodeA.PutPolicyVersion(ctx, store.PolicyVersion{Hash: "h1", Source: []byte("v1"), AppliedAt: time.Now(), AppliedBy: "t"}); err != nil {
		t.Fatal(err)
	}
	v1 := int64(1)

	t.Run("apply committing first", func(t *testing.T) {
		// The apply of version 2 on node A, holding policy_head as
		// ApplyPolicyVersion does, not yet committed.
		tx, pid := openTx(t, nodeA)
		if _, err := tx.ExecContext(ctx, `SELECT version FROM policy_head WHERE id = 1 FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_versions (version, hash, source, applied_at, applied_by) VALUES (2, 'h2', 'v2', 0, 't')`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE policy_head SET version = 2 WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		l := lease("lse_race1", "deploy")
		l.AtPolicy = &v1
		done := make(chan error, 1)
		go func() { done <- nodeB.InsertLease(context.Background(), l) }()
		waitBlockedBy(t, nodeA, pid)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, store.ErrPolicyChanged) {
			t.Fatalf("a lease decided at version 1 while version 2 committed: %v", err)
		}
		if _, err := nodeA.LeaseByID(ctx, l.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("refused lease stored: %v", err)
		}
	})

	t.Run("lease committing first", func(t *testing.T) {
		// A lease of grant "gone" decided at the version in force (2),
		// committing on node B as InsertLease writes it: the key-share
		// lock on policy_head is taken, the row written, not committed.
		tx, pid := openTx(t, nodeB)
		var v int
		if err := tx.QueryRowContext(ctx, `SELECT version FROM policy_head WHERE id = 1 FOR KEY SHARE`).Scan(&v); err != nil || v != 2 {
			t.Fatalf("version 2 not in force: %d %v", v, err)
		}
		now := time.Now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO leases (id, token_hash, issuer, subject, job, claims, grants, issued_at, expires_at, max_expires_at, source, bind_source, jkt, uses, max_uses, revoke_reason)
			VALUES ('lse_race2', sha256('race2'), 'ci', 's', 'j', '{}', 'gone', $1, $2, $2, '', 0, '', 0, 0, '')`, now.UnixNano(), now.Add(time.Hour).UnixNano()); err != nil {
			t.Fatal(err)
		}
		type applied struct {
			byGrant map[string][]string
			err     error
		}
		done := make(chan applied, 1)
		go func() {
			_, byGrant, err := nodeA.ApplyPolicyVersion(context.Background(), store.PolicyVersion{Hash: "h3", Source: []byte("v3"), AppliedAt: time.Now(), AppliedBy: "t"},
				[]string{"gone"}, "grant removed", nil)
			done <- applied{byGrant, err}
		}()
		waitBlockedBy(t, nodeB, pid)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || len(r.byGrant["gone"]) != 1 || r.byGrant["gone"][0] != "lse_race2" {
			t.Fatalf("apply removing grant gone: revoked %v, %v", r.byGrant, r.err)
		}
		l, err := nodeB.LeaseByID(ctx, "lse_race2")
		if err != nil || l.RevokedAt.IsZero() {
			t.Fatalf("lease committed while the apply waited: revoked at %v, %v", l.RevokedAt, err)
		}
	})
}
