package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// Nodes of a cluster flush the use counts of the same tokens at the same
// time (a job's token is used on every node). Each flush updated its
// leases in the order of a Go map, so two nodes locked the same rows in
// different orders and PostgreSQL broke the deadlock after a second
// (deadlock_timeout), failing one flush; meanwhile both waited, and with
// them every group commit and durability flush of their nodes, whose
// committer ran the update. The rows are now locked first, in id order.
func TestLeaseUsesFromNodesAtOnce(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	ctx := context.Background()
	var dbs []*store.DB
	for range 3 {
		db, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	uses := map[string]int64{}
	for i := range 32 {
		id := fmt.Sprintf("lse_%02d", i)
		if err := dbs[0].InsertLease(ctx, lease(id, "deploy")); err != nil {
			t.Fatal(err)
		}
		uses[id] = 1
	}
	const rounds = 30
	var wg sync.WaitGroup
	errs := make(chan error, len(dbs)*rounds)
	for _, db := range dbs {
		wg.Go(func() {
			for range rounds {
				if err := db.AddLeaseUses(ctx, uses); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Error(err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d flushes of use counts failed", failed, len(dbs)*rounds)
	}
	ls, err := dbs[0].ListLeases(ctx, store.LeaseFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Uses != int64(len(dbs)*rounds) {
			t.Fatalf("lease %s counts %d uses, want %d", l.ID, l.Uses, len(dbs)*rounds)
		}
	}
}
