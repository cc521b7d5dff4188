package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// MintedNames vouches for the names of an upstream's records that are not
// revoked (pending ones included: a role is recorded before it is made).
func testMintedNames(t *testing.T, b storetest.Backend) {
	db := b.DB
	now := time.Now().UTC()
	rec := func(id, up, name string) store.Minted {
		return store.Minted{ID: id, LeaseID: "lse_" + id, Upstream: up, Grant: "migrate", Kind: "postgres", ExternalName: name,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	var names []string
	for i := range store.HashBatch + 3 {
		n := fmt.Sprintf("role_%d", i)
		names = append(names, n)
		if i%2 == 0 {
			if err := db.InsertMinted(ctx, rec(fmt.Sprintf("mnt_%d", i), "db", n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.InsertMinted(ctx, rec("mnt_other", "other-db", "role_1")); err != nil {
		t.Fatal(err)
	}
	if err := db.MintedCreated(ctx, "mnt_2", []byte("h2h2h2h2h2h2h2h2h2h2h2h2h2h2h2h2"), nil, now.Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeMinted(ctx, []string{"mnt_4"}, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if err := db.MintedRevoked(ctx, "mnt_6", "test", now, nil); err != nil {
		t.Fatal(err)
	}
	got, err := db.MintedNames(ctx, "db", names)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		want := i%2 == 0 && i != 6 // pending, live and revoking are vouched for; revoked is not
		if got[n] != want {
			t.Fatalf("%s: known %v, want %v", n, got[n], want)
		}
	}
	if got, err := db.MintedNames(ctx, "db", nil); err != nil || len(got) != 0 {
		t.Fatalf("no names: %v %v", got, err)
	}
}
