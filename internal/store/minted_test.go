package store_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

func minted(id, leaseID string, created, expires time.Time) store.Minted {
	return store.Minted{ID: id, LeaseID: leaseID, Upstream: "gh", Grant: "release", Kind: "github_app",
		Params: []byte(`{"api_url":"x"}`), CreatedAt: created, ExpiresAt: expires}
}

func due(t *testing.T, db *store.DB, now, stale time.Time) []string {
	t.Helper()
	ms, err := db.MintedDue(ctx, now, stale, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

func testMinted(t *testing.T, b storetest.Backend) {
	db := b.DB
	now := time.Now().UTC()
	live, ended := lease("lse_live", "release"), lease("lse_ended", "release")
	for _, l := range []store.Lease{live, ended} {
		if err := db.InsertLease(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	later := now.Add(time.Hour)
	for _, m := range []store.Minted{
		minted("mnt_a", "lse_live", now, later),                 // live lease: not due
		minted("mnt_b", "lse_ended", now, later),                // lease revoked below: due
		minted("mnt_c", "lse_gone", now, later),                 // no such lease: due
		minted("mnt_d", "", now, now.Add(-time.Second)),         // a grant's, past its expiry: due
		minted("mnt_e", "", now, later),                         // a grant's, alive: not due
		minted("mnt_f", "lse_live", now.Add(-time.Hour), later), // pending since long ago: due (crash)
	} {
		if err := db.InsertMinted(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.InsertMinted(ctx, minted("mnt_a", "lse_live", now, later)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	hash := func(c byte) []byte { h := make([]byte, 32); h[0] = c; return h }
	for i, id := range []string{"mnt_a", "mnt_b", "mnt_c", "mnt_d", "mnt_e"} {
		if err := db.MintedCreated(ctx, id, hash(byte(i+1)), []byte("sealed"), later, nil); err != nil {
			t.Fatalf("created %s: %v", id, err)
		}
	}
	if err := db.MintedCreated(ctx, "mnt_a", hash(9), nil, later, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("created twice: %v", err)
	}
	if err := db.MintedCreated(ctx, "mnt_f", hash(1), nil, later, nil); !errors.Is(err, store.ErrExists) {
		t.Fatalf("a hash twice: %v", err)
	}
	// mnt_d was created with a later expiry: set it back.
	if err := db.SetMintedExpiry(ctx, "mnt_d", now.Add(-time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_ended"}, now, "test"); err != nil {
		t.Fatal(err)
	}
	stale := now.Add(-time.Minute)
	if got, want := due(t, db, now, stale), []string{"mnt_b", "mnt_c", "mnt_d", "mnt_f"}; !slices.Equal(got, want) {
		t.Fatalf("due = %v, want %v", got, want)
	}
	// by hash: the value's keyed hash finds the record, never a value
	found, err := db.MintedByHashes(ctx, [][32]byte{[32]byte(hash(1)), [32]byte(hash(7))})
	if err != nil || len(found) != 1 || found[[32]byte(hash(1))].ID != "mnt_a" || string(found[[32]byte(hash(1))].Sealed) != "sealed" {
		t.Fatalf("by hash = %+v %v", found, err)
	}
	// marking by lease (mnt_f, pending, is left: it may be being made, and
	// is due by itself once made or stale), then failing, then confirming
	if n, err := db.RevokeMinted(ctx, nil, []string{"lse_live"}, "leaked"); err != nil || n != 1 {
		t.Fatalf("revoke by lease: %d %v", n, err)
	}
	if err := db.MintedRevokeFailed(ctx, "mnt_a", "leaked", "github down", now.Add(time.Minute), nil); err != nil {
		t.Fatal(err)
	}
	if got := due(t, db, now, stale); slices.Contains(got, "mnt_a") {
		t.Fatalf("retried before its backoff: %v", got)
	}
	if got := due(t, db, now.Add(2*time.Minute), stale); !slices.Contains(got, "mnt_a") {
		t.Fatalf("not retried after its backoff: %v", got)
	}
	m, err := db.MintedByID(ctx, "mnt_a")
	if err != nil || m.State != store.MintRevoking || m.Attempts != 1 || m.LastError != "github down" || m.Reason != "leaked" {
		t.Fatalf("after a failure: %+v %v", m, err)
	}
	if err := db.MintedRevoked(ctx, "mnt_a", "ignored", now, nil); err != nil {
		t.Fatal(err)
	}
	m, _ = db.MintedByID(ctx, "mnt_a")
	if m.State != store.MintRevoked || m.Sealed != nil || m.Reason != "leaked" || m.LastError != "" || !m.RevokedAt.Equal(now.Truncate(0)) && m.RevokedAt.IsZero() {
		t.Fatalf("after revocation: %+v", m)
	}
	if err := db.MintedRevoked(ctx, "mnt_a", "again", now, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked twice: %v", err)
	}
	if got := due(t, db, now.Add(2*time.Minute), stale); slices.Contains(got, "mnt_a") {
		t.Fatalf("a revoked credential is due: %v", got)
	}
	// refused (its record does not verify): never due again, marked once
	if err := db.MintedRefused(ctx, "mnt_c", "tag does not verify", nil); err != nil {
		t.Fatal(err)
	}
	if got := due(t, db, now.Add(time.Hour), stale); slices.Contains(got, "mnt_c") {
		t.Fatalf("a refused record is due: %v", got)
	}
	if m, err := db.MintedByID(ctx, "mnt_c"); err != nil || m.State != store.MintRefused || m.LastError != "tag does not verify" {
		t.Fatalf("after refusal: %+v %v", m, err)
	}
	for _, id := range []string{"mnt_c", "mnt_a"} { // refused already; revoked
		if err := db.MintedRefused(ctx, id, "again", nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s refused again: %v", id, err)
		}
	}
	byLease, err := db.MintedByLease(ctx, "lse_live")
	if err != nil || len(byLease) != 2 {
		t.Fatalf("by lease = %v %v", byLease, err)
	}
	if n, err := db.SweepMinted(ctx, now.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if _, err := db.MintedByID(ctx, "mnt_a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("swept row still there: %v", err)
	}
}
