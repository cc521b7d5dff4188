package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// One conformance suite, run against every backend: both must behave the
// same for everything the rest of mayfly relies on.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storetest.Backend)
	}{
		{"meta", testMeta},
		{"keyring", testKeyring},
		{"secrets", testSecrets},
		{"secret grace after rotation", testSecretGrace},
		{"rotations", testRotations},
		{"admin tokens", testAdminTokens},
		{"jti single use", testJTI},
		{"policy versions", testPolicy},
		{"leases", testLeases},
		{"lease feed", testLeaseFeed},
		{"renewals on two nodes keep the later expiry", testRenewKeepsLater},
		{"lease at a policy version", testLeaseAtPolicy},
		{"lease with a once-only jti and its record", testLeaseOnceJTI},
		{"sequencing pending audit records", testSequence},
		{"mass revoke", testMassRevoke},
		{"lease pages", testLeasePages},
		{"lookups by many hashes", testByHashes},
		{"audit", testAudit},
		{"group commit isolates failures", testGroupCommit},
		{"reopen keeps data", testReopen},
		{"minted credentials", testMinted},
		{"minted names", testMintedNames},
		{"admin sessions and sign-ins swept", testSweepAdminSessions},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					var bb storetest.Backend
					if b.Name == "sqlite" {
						bb = storetest.SQLite(t)
					} else {
						bb = storetest.Postgres(t)
					}
					tt.fn(t, bb)
				})
			}
		})
	}
}

var ctx = context.Background()

func testMeta(t *testing.T, b storetest.Backend) {
	db := b.DB
	if _, err := db.GetMeta(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetMeta missing = %v", err)
	}
	ok, err := db.PutMetaIfAbsent(ctx, "k", []byte("v1"))
	if err != nil || !ok {
		t.Fatalf("first put: %v %v", ok, err)
	}
	ok, err = db.PutMetaIfAbsent(ctx, "k", []byte("v2"))
	if err != nil || ok {
		t.Fatalf("second put: %v %v", ok, err)
	}
	v, err := db.GetMeta(ctx, "k")
	if err != nil || string(v) != "v1" {
		t.Fatalf("GetMeta = %q %v", v, err)
	}
}

func testKeyring(t *testing.T, b storetest.Backend) {
	db := b.DB
	now := time.Now()
	if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: 1, Sealed: []byte("s1"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: 1, Sealed: []byte("other")}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate version: %v", err)
	}
	if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: 2, Sealed: []byte("s2"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	ks, err := db.KeyVersions(ctx)
	if err != nil || len(ks) != 2 || ks[0].Version != 1 || string(ks[1].Sealed) != "s2" {
		t.Fatalf("KeyVersions = %+v %v", ks, err)
	}
	put(t, db, "a", 1, 1)
	if err := db.DeleteKeyVersion(ctx, 1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delete in-use version: %v", err)
	}
	if err := db.RewrapSecret(ctx, "a", 1, 1, 2, []byte("w2")); err != nil {
		t.Fatal(err)
	}
	if err := db.RewrapSecret(ctx, "a", 1, 1, 2, []byte("w3")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale re-wrap: %v", err)
	}
	if err := db.DeleteKeyVersion(ctx, 1); err != nil {
		t.Fatal(err)
	}
	use, err := db.KeyVersionsInUse(ctx)
	if err != nil || use[2] != 1 || use[1] != 0 {
		t.Fatalf("in use = %v %v", use, err)
	}
	// A row sealed under a keyring version that is gone (deleted, or never
	// made) could never be opened: refused, nothing written.
	for _, kek := range []int{1, 3} {
		err := db.PutSecret(ctx, store.Secret{Name: "b", Version: 1, KEKVersion: kek, WrappedDEK: []byte("w"), Ciphertext: []byte("c"), CreatedAt: now})
		if !errors.Is(err, store.ErrKeyVersionGone) {
			t.Fatalf("put under keyring version %d: %v", kek, err)
		}
		if err := db.RewrapSecret(ctx, "a", 1, 2, kek, []byte("w4")); !errors.Is(err, store.ErrKeyVersionGone) {
			t.Fatalf("re-wrap to keyring version %d: %v", kek, err)
		}
	}
	if _, err := db.GetSecret(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused put stored: %v", err)
	}
	if s, err := db.GetSecret(ctx, "a"); err != nil || s.KEKVersion != 2 || string(s.WrappedDEK) != "w2" {
		t.Fatalf("refused re-wrap changed the row: %+v %v", s, err)
	}
}

// addKeyring stores keyring versions: a sealed row must name one.
func addKeyring(t testing.TB, db *store.DB, versions ...int) {
	t.Helper()
	for _, v := range versions {
		if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: v, Sealed: []byte(fmt.Sprint("s", v)), CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

func put(t *testing.T, db *store.DB, name string, version, kek int) {
	t.Helper()
	err := db.PutSecret(ctx, store.Secret{Name: name, Version: version, KEKVersion: kek,
		WrappedDEK: []byte("dek-" + name), Ciphertext: []byte(fmt.Sprintf("ct-%s-%d", name, version)), CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
}

func testSecrets(t *testing.T, b storetest.Backend) {
	db := b.DB
	addKeyring(t, db, 1)
	if v, err := db.NextSecretVersion(ctx, "gh"); err != nil || v != 1 {
		t.Fatalf("next = %d %v", v, err)
	}
	put(t, db, "gh", 1, 1)
	put(t, db, "gh", 2, 1)
	if err := db.PutSecret(ctx, store.Secret{Name: "gh", Version: 2, KEKVersion: 1, WrappedDEK: []byte("x"), Ciphertext: []byte("y")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale version: %v", err)
	}
	s, err := db.GetSecret(ctx, "gh")
	if err != nil || s.Version != 2 || string(s.Ciphertext) != "ct-gh-2" {
		t.Fatalf("GetSecret = %+v %v", s, err)
	}
	put(t, db, "aws", 1, 1)
	list, err := db.ListSecrets(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "aws" || list[1].Version != 2 {
		t.Fatalf("ListSecrets = %+v %v", list, err)
	}
	// The replaced version's ciphertext is gone from the database.
	var n int
	if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM secrets WHERE ciphertext = ?`), []byte("ct-gh-1")).Scan(&n); err != nil || n != 0 {
		t.Fatalf("old ciphertext kept: %d %v", n, err)
	}
	below, err := db.SecretsWrappedBelow(ctx, 2, 10)
	if err != nil || len(below) != 2 {
		t.Fatalf("below = %d %v", len(below), err)
	}
	if err := db.DeleteSecret(ctx, "gh", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetSecret(ctx, "gh"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted secret readable: %v", err)
	}
	if err := db.DeleteSecret(ctx, "gh", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if v, _ := db.NextSecretVersion(ctx, "gh"); v != 3 {
		t.Fatalf("versions reused after delete: next=%d", v)
	}
}

func testAdminTokens(t *testing.T, b storetest.Backend) {
	db := b.DB
	h1 := [32]byte{1}
	h2 := [32]byte{2}
	if err := db.CreateAdminToken(ctx, store.AdminToken{Name: "root", Role: "admin", Hash: h1, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateAdminToken(ctx, store.AdminToken{Name: "root", Role: "admin", Hash: h2}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := db.AdminTokenByHash(ctx, h1)
	if err != nil || got.Name != "root" || got.Role != "admin" {
		t.Fatalf("by hash = %+v %v", got, err)
	}
	if err := db.RevokeAdminToken(ctx, "root", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AdminTokenByHash(ctx, h1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked token found: %v", err)
	}
	if err := db.RevokeAdminToken(ctx, "root", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("double revoke: %v", err)
	}
	if err := db.CreateAdminToken(ctx, store.AdminToken{Name: "root", Role: "auditor", Hash: h2, CreatedAt: time.Now()}); err != nil {
		t.Fatalf("reuse revoked name: %v", err)
	}
	list, err := db.ListAdminTokens(ctx)
	if err != nil || len(list) != 1 || list[0].Role != "auditor" || !list[0].RevokedAt.IsZero() {
		t.Fatalf("list = %+v %v", list, err)
	}
}

func testJTI(t *testing.T, b storetest.Backend) {
	db := b.DB
	exp := time.Now().Add(time.Hour)
	// Many concurrent uses of one jti: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fresh, err := db.UseJTI(ctx, "github", "jti-1", exp)
			if err != nil {
				t.Error(err)
				return
			}
			if fresh {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d winners, want 1", wins)
	}
	if fresh, _ := db.UseJTI(ctx, "gitlab", "jti-1", exp); !fresh {
		t.Fatal("jti scoped per issuer")
	}
	db.UseJTI(ctx, "github", "old", time.Now().Add(-time.Hour))
	// Remembered until an exp past what Unix nanoseconds hold (2262): kept
	// by the sweep, not wrapped into the past.
	db.UseJTI(ctx, "github", "far", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))
	n, err := db.SweepJTIs(ctx, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("sweep = %d %v", n, err)
	}
	if fresh, err := db.UseJTI(ctx, "github", "far", time.Now().Add(time.Hour)); err != nil || fresh {
		t.Fatalf("a jti remembered until 2300 was forgotten (fresh %v, %v)", fresh, err)
	}
}

func testPolicy(t *testing.T, b storetest.Backend) {
	db := b.DB
	if _, err := db.LatestPolicy(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("empty latest: %v", err)
	}
	for i := 1; i <= 3; i++ {
		v, err := db.PutPolicyVersion(ctx, store.PolicyVersion{Hash: fmt.Sprint(i), Source: []byte("grants: {}"), AppliedAt: time.Now(), AppliedBy: "root"})
		if err != nil || v != int64(i) {
			t.Fatalf("put = %d %v", v, err)
		}
	}
	p, err := db.LatestPolicy(ctx)
	if err != nil || p.Version != 3 || p.Hash != "3" || p.AppliedBy != "root" {
		t.Fatalf("latest = %+v %v", p, err)
	}
}

func lease(id string, grants ...string) store.Lease {
	now := time.Now().UTC()
	var h [32]byte
	copy(h[:], id)
	return store.Lease{ID: id, Hash: h, Issuer: "github", Subject: "repo:acme/app:ref:refs/heads/main", Job: "run-" + id,
		Claims: map[string]string{"repository_id": "123"}, Grants: grants, IssuedAt: now, ExpiresAt: now.Add(10 * time.Minute),
		MaxExpiresAt: now.Add(time.Hour), Source: "127.0.0.1", BindSource: true, JKT: "thumb"}
}

func testLeases(t *testing.T, b storetest.Backend) {
	db := b.DB
	l := lease("lse_a", "deploy", "read")
	if err := db.InsertLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertLease(ctx, l); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate lease: %v", err)
	}
	if err := db.InsertLease(ctx, lease("lse_b", "read_only")); err != nil {
		t.Fatal(err)
	}
	got, err := db.LeaseByHash(ctx, l.Hash)
	if err != nil || got.ID != "lse_a" || len(got.Grants) != 2 || got.Claims["repository_id"] != "123" || !got.BindSource || got.JKT != "thumb" {
		t.Fatalf("by hash = %+v %v", got, err)
	}
	if !got.ExpiresAt.Equal(l.ExpiresAt) {
		t.Fatalf("expiry %v != %v", got.ExpiresAt, l.ExpiresAt)
	}
	// Grant filter matches whole names only ("read" is not "read_only").
	ls, err := db.ListLeases(ctx, store.LeaseFilter{Grant: "read", LiveAt: time.Now()})
	if err != nil || len(ls) != 1 || ls[0].ID != "lse_a" {
		t.Fatalf("list by grant = %v %v", ls, err)
	}
	ls, _ = db.ListLeases(ctx, store.LeaseFilter{Grant: "read%"})
	if len(ls) != 0 {
		t.Fatalf("LIKE wildcard leaked through: %d", len(ls))
	}
	// Names are case-sensitive on every backend: removing grant "Read"
	// must not revoke the tokens of "read" (SQLite's LIKE ignores case); a
	// name with a space, none of a grant, matches nothing, not two names.
	for _, g := range []string{"Read", "READ", "rea_", "deploy read"} {
		if ls, _ = db.ListLeases(ctx, store.LeaseFilter{Grant: g}); len(ls) != 0 {
			t.Fatalf("grant filter %q matched %d leases of another grant", g, len(ls))
		}
	}
	newExp := time.Now().Add(20 * time.Minute)
	if err := db.RenewLease(ctx, "lse_a", newExp, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.AddLeaseUses(ctx, map[string]int64{"lse_a": 3}); err != nil {
		t.Fatal(err)
	}
	// A limited lease: each use counted, none past the limit.
	lim := lease("lse_lim", "deploy")
	lim.MaxUses = 2
	if err := db.InsertLease(ctx, lim); err != nil {
		t.Fatal(err)
	}
	for i, want := range []error{nil, nil, store.ErrConflict} {
		if err := db.UseLease(ctx, "lse_lim"); !errors.Is(err, want) && err != want {
			t.Fatalf("use %d: %v, want %v", i+1, err, want)
		}
	}
	if got, _ := db.LeaseByID(ctx, "lse_lim"); got.Uses != 2 {
		t.Fatalf("uses = %d, want 2", got.Uses)
	}
	if err := db.UseLease(ctx, "lse_none"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("use of an unknown lease: %v", err)
	}
	ids, err := db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_a"}, time.Now(), "test")
	if err != nil || len(ids) != 1 {
		t.Fatalf("revoke = %v %v", ids, err)
	}
	if ids, _ := db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_a"}, time.Now(), "again"); len(ids) != 0 {
		t.Fatal("revoked twice")
	}
	if _, err := db.RevokeLeases(ctx, store.LeaseFilter{}, time.Now(), "all"); err == nil {
		t.Fatal("empty filter accepted")
	}
	if err := db.RenewLease(ctx, "lse_a", newExp, time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("renew revoked: %v", err)
	}
	got, _ = db.LeaseByID(ctx, "lse_a")
	if got.Uses != 3 || got.RevokedAt.IsZero() || got.RevokeReason != "test" {
		t.Fatalf("after revoke = %+v", got)
	}
	evs, err := db.LeaseEvents(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		if e.LeaseID == "lse_a" {
			kinds = append(kinds, e.Kind)
		}
	}
	if fmt.Sprint(kinds) != "[renew revoke]" { // an issue writes none: other nodes read a lease on first use
		t.Fatalf("events = %v", kinds)
	}
	last, _ := db.LastLeaseEvent(ctx)
	if last != evs[len(evs)-1].Seq {
		t.Fatalf("last event %d", last)
	}
	expired := lease("lse_old")
	expired.ExpiresAt = time.Now().Add(-48 * time.Hour)
	db.InsertLease(ctx, expired)
	if n, err := db.SweepLeases(ctx, time.Now().Add(-24*time.Hour)); err != nil || n != 1 {
		t.Fatalf("sweep = %d %v", n, err)
	}
}

// Paging through leases with a cursor sees each exactly once, newest first,
// also when several leases share an issue time.
func testLeasePages(t *testing.T, b storetest.Backend) {
	db := b.DB
	base := time.Now().UTC().Truncate(time.Millisecond)
	var want []string
	for i := 0; i < 23; i++ {
		l := lease(fmt.Sprintf("lse_%02d", i), "g")
		l.IssuedAt = base.Add(time.Duration(i/3) * time.Second) // three leases per instant
		var h [32]byte
		copy(h[:], l.ID)
		l.Hash = h
		if err := db.InsertLease(ctx, l); err != nil {
			t.Fatal(err)
		}
		want = append([]string{l.ID}, want...)
	}
	for _, size := range []int{1, 2, 3, 5, 23, 50} {
		var got []string
		var after *store.LeaseCursor
		for pages := 0; pages < 30; pages++ {
			ls, err := db.ListLeases(ctx, store.LeaseFilter{Grant: "g", Limit: size, After: after})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range ls {
				got = append(got, l.ID)
			}
			if len(ls) < size {
				break
			}
			last := ls[len(ls)-1]
			after = &store.LeaseCursor{IssuedAt: last.IssuedAt, ID: last.ID}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("pages of %d: got %v, want %v", size, got, want)
		}
	}
}

func testMassRevoke(t *testing.T, b storetest.Backend) {
	db := b.DB
	const n = 2000
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			g := "deploy"
			if i%2 == 1 {
				g = "other"
			}
			if err := db.InsertLease(ctx, lease(fmt.Sprintf("lse_%05d", i), g)); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	ids, err := db.RevokeLeases(ctx, store.LeaseFilter{Grant: "deploy"}, time.Now(), "mass")
	if err != nil || len(ids) != n/2 {
		t.Fatalf("revoked %d %v", len(ids), err)
	}
	live, _ := db.ListLeases(ctx, store.LeaseFilter{LiveAt: time.Now()})
	if len(live) != n/2 {
		t.Fatalf("live after = %d", len(live))
	}
}

func testAudit(t *testing.T, b storetest.Backend) {
	db := b.DB
	if n, err := db.AuditSize(ctx); err != nil || n != 0 {
		t.Fatalf("size = %d %v", n, err)
	}
	entries := [][]byte{[]byte(`{"index":0}`), []byte(`{"index":1}`)}
	hashes := [][32]byte{{1}, {2}, {3}}
	if err := db.AppendAudit(ctx, 0, entries, 0, hashes, store.AuditDurable); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendAudit(ctx, 0, entries, 3, hashes, store.AuditDurable); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("append at stale size: %v", err)
	}
	if n, _ := db.AuditSize(ctx); n != 2 {
		t.Fatalf("size = %d", n)
	}
	// Written mode: the same records and the same conflict check.
	more := [][]byte{[]byte(`{"index":2}`)}
	if err := db.AppendAudit(ctx, 0, more, 3, hashes[:1], store.AuditWritten); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("written append at stale size: %v", err)
	}
	if err := db.AppendAudit(ctx, 2, more, 3, [][32]byte{{4}}, store.AuditWritten); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.AuditSize(ctx); n != 3 {
		t.Fatalf("size after written append = %d", n)
	}
	if got, err := db.AuditHashes(ctx, []int64{3}); err != nil || got[0] != ([32]byte{4}) {
		t.Fatalf("hash of written append = %v %v", got, err)
	}
	got, err := db.AuditEntries(ctx, 1, 10)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], entries[1]) || !bytes.Equal(got[1], more[0]) {
		t.Fatalf("entries = %q %v", got, err)
	}
	hs, err := db.AuditHashes(ctx, []int64{2, 0, 2})
	if err != nil || hs[0] != hashes[2] || hs[1] != hashes[0] || hs[2] != hashes[2] {
		t.Fatalf("hashes = %v %v", hs, err)
	}
	if _, err := db.AuditHashes(ctx, []int64{9}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing hash: %v", err)
	}
	// A range across two appends' runs, and one running past the end.
	hs, err = db.AuditHashes(ctx, []int64{1, 2, 3})
	if err != nil || hs[0] != hashes[1] || hs[1] != hashes[2] || hs[2] != ([32]byte{4}) {
		t.Fatalf("hashes across appends = %v %v", hs, err)
	}
	if _, err := db.AuditHashes(ctx, []int64{2, 3, 4}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("range past the end: %v", err)
	}
	// Kept mode, the journal's: the same again.
	kept := [][]byte{[]byte(`{"index":3}`)}
	if err := db.AppendAudit(ctx, 2, kept, 4, hashes[:1], store.AuditKept); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("kept append at stale size: %v", err)
	}
	if err := db.AppendAudit(ctx, 3, kept, 4, [][32]byte{{5}, {6}, {7}}, store.AuditKept); err != nil {
		t.Fatal(err)
	}
	// A mode the store does not know is refused, never taken as a weaker
	// one, and nothing is written.
	for _, bad := range []store.AuditCommit{-1, 3} {
		if err := db.AppendAudit(ctx, 4, [][]byte{[]byte(`{"index":4}`)}, 7, [][32]byte{{8}}, bad); err == nil {
			t.Fatalf("mode %d taken", bad)
		}
		if _, err := db.AddAuditPending(ctx, [][]byte{[]byte("x")}, bad); err == nil {
			t.Fatalf("pending mode %d taken", bad)
		}
	}
	if n, _ := db.AuditSize(ctx); n != 4 {
		t.Fatalf("size after kept append = %d", n)
	}
	if _, _, err := db.LatestAuditCheckpoint(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no checkpoint: %v", err)
	}
	db.PutAuditCheckpoint(ctx, 1, []byte("c1"))
	db.PutAuditCheckpoint(ctx, 2, []byte("c2"))
	db.PutAuditCheckpoint(ctx, 2, []byte("ignored"))
	size, note, err := db.LatestAuditCheckpoint(ctx)
	if err != nil || size != 2 || string(note) != "c2" {
		t.Fatalf("latest = %d %q %v", size, note, err)
	}
	if c, err := db.AuditCheckpoint(ctx, 1); err != nil || string(c) != "c1" {
		t.Fatalf("checkpoint 1 = %q %v", c, err)
	}
	if n, _ := db.AuditCursor(ctx, "file"); n != 0 {
		t.Fatal("new cursor not 0")
	}
	db.SetAuditCursor(ctx, "file", 5)
	db.SetAuditCursor(ctx, "file", 7)
	if n, _ := db.AuditCursor(ctx, "file"); n != 7 {
		t.Fatalf("cursor = %d", n)
	}
}

// Many concurrent writers share commits, and one failing write does not
// undo its neighbours in the same batch.
func testGroupCommit(t *testing.T, b storetest.Backend) {
	db := b.DB
	addKeyring(t, db, 1)
	const n = 200
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ver := 1
			if i%10 == 0 {
				ver = 5 // wrong next version: this write must fail alone
			}
			errs[i] = db.PutSecret(ctx, store.Secret{Name: fmt.Sprintf("s%03d", i), Version: ver, KEKVersion: 1,
				WrappedDEK: []byte("d"), Ciphertext: []byte("c"), CreatedAt: time.Now()})
		}(i)
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		if i%10 == 0 {
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("write %d: %v", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		want++
	}
	list, _ := db.ListSecrets(ctx)
	var names []string
	for _, s := range list {
		names = append(names, s.Name)
	}
	if len(names) != want || !sort.StringsAreSorted(names) {
		t.Fatalf("%d secrets stored, want %d", len(names), want)
	}
}

func testReopen(t *testing.T, b storetest.Backend) {
	addKeyring(t, b.DB, 1)
	put(t, b.DB, "kept", 1, 1)
	db := b.Reopen(t)
	if _, err := db.GetSecret(ctx, "kept"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	cfgs := []store.Config{{Path: filepath.Join(t.TempDir(), "m.db")}}
	if dsn := os.Getenv("MAYFLY_TEST_POSTGRES"); dsn != "" {
		cfgs = append(cfgs, store.Config{PostgresDSN: storetest.FreshSchema(t, dsn)})
	}
	for _, cfg := range cfgs {
		db, err := store.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.SQL().ExecContext(ctx, db.Rebind(`UPDATE meta SET value = ? WHERE key = 'schema_version'`), []byte("999")); err != nil {
			t.Fatal(err)
		}
		db.Close()
		db, err = store.Open(ctx, cfg)
		if err == nil {
			db.Close()
			t.Fatalf("%s: opened a database with a newer schema", db.Backend())
		}
		// Both versions, and what to do about it.
		for _, want := range []string{"version 999", "newer than this mayfly knows", fmt.Sprintf("(%d)", store.SchemaVersion()), "upgrade this binary"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want it to say %q", err, want)
			}
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// BenchmarkSecretWrites measures durable sealed-record writes (the shape
// of a secret write) with 1 and 32 concurrent writers on each backend.
func BenchmarkSecretWrites(b *testing.B) {
	for _, be := range storetest.Backends(b) {
		addKeyring(b, be.DB, 1)
		for _, writers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/writers=%d", be.Name, writers), func(b *testing.B) {
				var mu sync.Mutex
				next := 0
				run := fmt.Sprintf("%x", randomBytes(4))
				b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						mu.Lock()
						next++
						name := fmt.Sprintf("w%s-%d", run, next)
						mu.Unlock()
						if err := be.DB.PutSecret(ctx, store.Secret{Name: name, Version: 1, KEKVersion: 1,
							WrappedDEK: randomBytes(60), Ciphertext: randomBytes(64), CreatedAt: time.Now()}); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

func BenchmarkSecretReads(b *testing.B) {
	for _, be := range storetest.Backends(b) {
		addKeyring(b, be.DB, 1)
		for i := 0; i < 100; i++ {
			be.DB.PutSecret(ctx, store.Secret{Name: fmt.Sprintf("r%d", i), Version: 1, KEKVersion: 1, WrappedDEK: randomBytes(60), Ciphertext: randomBytes(64)})
		}
		for _, readers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/readers=%d", be.Name, readers), func(b *testing.B) {
				b.SetParallelism(max(1, readers/runtime.GOMAXPROCS(0)))
				var n int
				var mu sync.Mutex
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						mu.Lock()
						n++
						name := fmt.Sprintf("r%d", n%100)
						mu.Unlock()
						if _, err := be.DB.GetSecret(ctx, name); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// Two nodes renewing one lease at once each write the expiry they
// computed; whichever commits last must not shorten the lease the other
// extended (its job was told the later expiry). A renewal to an earlier
// time than stored still succeeds, as the lease is live, and leaves it.
func testRenewKeepsLater(t *testing.T, b storetest.Backend) {
	one, two := b.DB, b.Another(t)
	l := lease("lse_r", "deploy")
	if err := one.InsertLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	later, sooner := l.ExpiresAt.Add(20*time.Minute), l.ExpiresAt.Add(5*time.Minute)
	for i, step := range []struct {
		db      *store.DB
		renewTo time.Time
		want    time.Time
	}{
		{one, later, later},  // the node whose renewal computed the later expiry commits first
		{two, sooner, later}, // then the other's, computed a moment before
		{two, l.ExpiresAt.Add(30 * time.Minute), l.ExpiresAt.Add(30 * time.Minute)},
	} {
		if err := step.db.RenewLease(ctx, "lse_r", step.renewTo, time.Now()); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		for _, db := range []*store.DB{one, two} {
			got, err := db.LeaseByID(ctx, "lse_r")
			if err != nil || !got.ExpiresAt.Equal(step.want) {
				t.Fatalf("after renewal %d to %v: expires %v (%v), want %v", i, step.renewTo, got.ExpiresAt, err, step.want)
			}
		}
	}
}

// The feed tells this handle's events from another's, and brings another
// handle's renewal with the lease as stored now, in one read. Issues are
// not in it.
func testLeaseFeed(t *testing.T, b storetest.Backend) {
	mine, theirs := b.DB, b.Another(t)
	start, _, err := mine.LeaseFeedStart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := mine.InsertLease(ctx, lease("lse_mine", "deploy")); err != nil {
		t.Fatal(err)
	}
	if err := theirs.InsertLease(ctx, lease("lse_theirs", "deploy")); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(30 * time.Minute)
	if err := mine.RenewLease(ctx, "lse_mine", later, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := theirs.RenewLease(ctx, "lse_theirs", later, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_mine"}, time.Now(), "test"); err != nil {
		t.Fatal(err)
	}
	page, err := mine.LeaseFeedRead(ctx, store.LeaseFeedRequest{After: start, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Head) != 2 || !page.Head[0].Own || page.Head[0].Kind != "renew" || page.Head[0].Lease != nil || page.Head[1].Own ||
		page.Head[1].Lease == nil || page.Head[1].Lease.ID != "lse_theirs" || page.Head[1].Lease.Claims["repository_id"] != "123" ||
		!page.Head[1].Lease.ExpiresAt.Equal(later) {
		t.Fatalf("first page: %+v", page.Head)
	}
	if b.Name == "postgres" && page.InProgress == nil || b.Name == "sqlite" && page.InProgress != nil {
		t.Fatalf("in progress: %v", page.InProgress)
	}
	page, err = mine.LeaseFeedRead(ctx, store.LeaseFeedRequest{After: page.Head[1].Seq, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Head) != 1 || page.Head[0].Kind != "revoke" || page.Head[0].LeaseID != "lse_mine" || page.Head[0].Own || page.Head[0].Lease != nil {
		t.Fatalf("second page: %+v", page.Head)
	}
}

// A lease decided against a policy version commits only while that
// version is in force.
func testLeaseAtPolicy(t *testing.T, b storetest.Backend) {
	db := b.DB
	v0 := int64(0)
	l := lease("lse_p0", "deploy")
	l.AtPolicy = &v0
	if err := db.InsertLease(ctx, l); err != nil {
		t.Fatalf("at version 0: %v", err)
	}
	if err := db.InsertLease(ctx, l); !errors.Is(err, store.ErrExists) {
		t.Fatalf("again: %v", err)
	}
	if _, err := db.PutPolicyVersion(ctx, store.PolicyVersion{Hash: "h", Source: []byte("x"), AppliedAt: time.Now(), AppliedBy: "t"}); err != nil {
		t.Fatal(err)
	}
	l = lease("lse_p1", "deploy")
	l.AtPolicy = &v0
	if err := db.InsertLease(ctx, l); !errors.Is(err, store.ErrPolicyChanged) {
		t.Fatalf("at a replaced version: %v", err)
	}
	if _, err := db.LeaseByID(ctx, "lse_p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stored anyway: %v", err)
	}
	v1 := int64(1)
	l.AtPolicy = &v1
	if err := db.InsertLease(ctx, l); err != nil {
		t.Fatalf("at the version in force: %v", err)
	}
}

// A lease issued for a one-time ID token records its jti and its audit
// record in one commit, and no feed event (other nodes read it on first
// use): a jti seen before refuses the lease and leaves nothing, and a lease
// refused for another reason (a replaced policy version, a taken id) does
// not use up its jti.
func testLeaseOnceJTI(t *testing.T, b storetest.Backend) {
	db := b.DB
	pending := func() int { return pendingCount(t, db) }
	events := func(id string) int {
		var n int
		if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM lease_events WHERE lease_id = ?`), id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	jti := func(id string) *store.JTI {
		return &store.JTI{Issuer: "https://ci.example", ID: id, Expires: time.Now().Add(time.Hour)}
	}
	note := func() *store.Note {
		return &store.Note{Make: func(c store.Changes) ([][]byte, error) { return [][]byte{[]byte("issued " + c.Leases[0])}, nil }}
	}
	p0 := pending()
	var head int64
	if err := db.SQL().QueryRowContext(ctx, `SELECT version FROM policy_head WHERE id = 1`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	stale := head + 1
	tests := []struct {
		name     string
		id       string
		jti      string
		atPolicy *int64
		want     error
	}{
		{"first use", "lse_j1", "jti-1", &head, nil},
		{"the same jti again", "lse_j2", "jti-1", &head, store.ErrReplay},
		{"a replaced policy version", "lse_j3", "jti-3", &stale, store.ErrPolicyChanged},
		{"its jti, not used up", "lse_j3", "jti-3", &head, nil},
		{"a taken lease id", "lse_j1", "jti-4", nil, store.ErrExists},
		{"its jti, not used up either", "lse_j4", "jti-4", nil, nil},
	}
	for _, tt := range tests {
		l := lease(tt.id, "deploy")
		l.OnceJTI, l.AtPolicy, l.Note = jti(tt.jti), tt.atPolicy, note()
		before := pending()
		err := db.InsertLease(ctx, l)
		if !errors.Is(err, tt.want) {
			t.Fatalf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if tt.want != nil {
			if pending() != before || len(l.Note.PIDs) != 0 {
				t.Fatalf("%s: refused, yet %d records, pids %v", tt.name, pending()-before, l.Note.PIDs)
			}
			continue
		}
		if pending() != before+1 || len(l.Note.PIDs) != 1 || events(tt.id) != 0 {
			t.Fatalf("%s: %d records, pids %v, %d events; want 1, 1 and 0", tt.name, pending()-before, l.Note.PIDs, events(tt.id))
		}
		var data []byte
		if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT data FROM audit_pending WHERE id = ?`), l.Note.PIDs[0]).Scan(&data); err != nil || string(data) != "issued "+tt.id {
			t.Fatalf("%s: record %d = %q, %v", tt.name, l.Note.PIDs[0], data, err)
		}
	}
	if _, err := db.LeaseByID(ctx, "lse_j2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a replayed jti's lease stored: %v", err)
	}
	if events("lse_j2") != 0 {
		t.Fatal("a replayed jti's lease has a feed event")
	}
	if pending() != p0+3 {
		t.Fatalf("%d records in all, want 3", pending()-p0)
	}
}

// The sequencer stores entries at the log's end from pending records,
// deleting those records (and the merged ones: decisions folded into
// their completions' entries), with their stored hashes, all at once; a
// batch at the wrong size, or naming a record already taken, changes
// nothing. Its reads of pending records skip the ones it holds.
func testSequence(t *testing.T, b storetest.Backend) {
	db := b.DB
	seq, err := db.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		t.Fatalf("sequencer: %v, %v", seq, err)
	}
	defer seq.Close()
	recs := make([][]byte, 310)
	for i := range recs {
		recs[i] = []byte(fmt.Sprintf("record %d", i))
	}
	pids, err := db.AddAuditPending(ctx, recs, store.AuditDurable)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(i int) []byte { return []byte(fmt.Sprintf("entry %d", i)) }
	batch := func(start, n int) ([][]byte, [][32]byte) {
		var es [][]byte
		var hs [][32]byte
		for i := start; i < start+n; i++ {
			es = append(es, entry(i))
			hs = append(hs, [32]byte{byte(i), byte(i >> 8), 7})
		}
		return es, hs
	}
	state := func() (size int64, pending int) {
		size, err := db.AuditSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pending = pendingCount(t, db)
		return size, pending
	}
	// 260 entries, hashes in three runs (120 a run), then the rest.
	es, hs := batch(0, 260)
	if err := seq.Sequence(ctx, 0, es, pids[:260], nil, 0, hs); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		after int64
		limit int
		skip  []int64
		want  []int64
	}{
		{0, 3, nil, pids[260:263]},
		{0, 3, []int64{pids[260], pids[262]}, []int64{pids[261], pids[263], pids[264]}},
		{0, 2, []int64{pids[0], pids[261]}, []int64{pids[260], pids[262]}}, // a skipped id already gone
		{0, 100, pids[260:], nil},
		{pids[261], 3, nil, pids[262:265]},
		{pids[261], 2, []int64{pids[260], pids[263]}, []int64{pids[262], pids[264]}},
		{pids[len(pids)-1], 10, nil, nil},
	} {
		got, data, err := seq.Pending(ctx, r.after, r.limit, r.skip)
		if err != nil || !slices.Equal(got, r.want) || len(data) != len(got) {
			t.Fatalf("Pending(after %d, %d, skip %v) = %v, %v; want %v", r.after, r.limit, r.skip, got, err, r.want)
		}
		for k, id := range got {
			if i := slices.Index(pids, id); string(data[k]) != string(recs[i]) {
				t.Fatalf("pending %d holds %q, want %q", id, data[k], recs[i])
			}
		}
	}
	refused := []struct {
		name   string
		start  int64
		pids   []int64
		merged []int64
	}{
		{"at a stale size", 0, pids[260:300], pids[300:]},
		{"past the end", 261, pids[260:300], pids[300:]},
		{"a record already taken", 260, append([]int64{pids[0]}, pids[261:300]...), pids[300:]},
		{"a merged record already taken", 260, pids[260:300], append([]int64{pids[0]}, pids[301:]...)},
	}
	for _, r := range refused {
		es, hs := batch(260, len(r.pids))
		if err := seq.Sequence(ctx, r.start, es, r.pids, r.merged, 260, hs); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("%s: %v, want ErrConflict", r.name, err)
		}
		if size, pending := state(); size != 260 || pending != 50 {
			t.Fatalf("%s: size %d, %d pending after a refused batch; want 260, 50", r.name, size, pending)
		}
	}
	es, hs = batch(260, 40)
	if err := seq.Sequence(ctx, 260, es, pids[260:300], pids[300:], 260, hs); err != nil {
		t.Fatal(err)
	}
	if size, pending := state(); size != 300 || pending != 0 {
		t.Fatalf("size %d, %d pending; want 300, 0", size, pending)
	}
	got, err := db.AuditEntries(ctx, 0, 1000)
	if err != nil || len(got) != 300 {
		t.Fatalf("entries: %d, %v", len(got), err)
	}
	idx, gotPIDs, err := db.AuditSequenced(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if string(got[i]) != string(entry(i)) || idx[i] != int64(i) || gotPIDs[i] != pids[i] {
			t.Fatalf("entry %d: %q at %d from pending %d; want %q from %d", i, got[i], idx[i], gotPIDs[i], entry(i), pids[i])
		}
	}
	want := []int64{0, 119, 120, 259, 260, 299}
	hashes, err := db.AuditHashes(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	for k, i := range want {
		if hashes[k] != [32]byte{byte(i), byte(i >> 8), 7} {
			t.Fatalf("stored hash %d: %x", i, hashes[k][:3])
		}
	}
}

// Many hashes are looked up in batches (HashBatch per query), across batch
// edges, finding exactly the stored ones: leases live or not, admin tokens
// only while live.
func testByHashes(t *testing.T, b storetest.Backend) {
	db := b.DB
	var want [][32]byte
	for _, id := range []string{"lse_x1", "lse_x2", "lse_x3"} {
		l := lease(id, "deploy")
		if err := db.InsertLease(ctx, l); err != nil {
			t.Fatal(err)
		}
		want = append(want, l.Hash)
	}
	if _, err := db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_x3"}, time.Now(), "t"); err != nil {
		t.Fatal(err)
	}
	live, gone := [32]byte{0xa1}, [32]byte{0xa2}
	for name, h := range map[string][32]byte{"live": live, "gone": gone} {
		if err := db.CreateAdminToken(ctx, store.AdminToken{Name: name, Role: "auditor", Hash: h, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.RevokeAdminToken(ctx, "gone", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, store.HashBatch - 1, store.HashBatch, 2*store.HashBatch + 7} {
		var hs [][32]byte
		for i := range n {
			var h [32]byte
			h[0], h[1], h[2] = 0xff, byte(i>>8), byte(i)
			hs = append(hs, h)
		}
		// The stored ones at the start, at a batch edge and at the end.
		used := map[int]bool{}
		for i, h := range append(slices.Clone(want), live, gone) {
			if pos := []int{0, store.HashBatch - 1, store.HashBatch, n - 1, n / 2}[i]; pos >= 0 && pos < n && !used[pos] {
				used[pos] = true
				hs[pos] = h
			} else {
				hs = append(hs, h)
			}
		}
		leases, err := db.LeasesByHashes(ctx, hs)
		if err != nil {
			t.Fatalf("%d hashes: %v", n, err)
		}
		if len(leases) != 3 || leases[want[0]].ID != "lse_x1" || leases[want[2]].RevokedAt.IsZero() || leases[want[1]].Claims["repository_id"] != "123" {
			t.Fatalf("%d hashes: leases %v", n, leases)
		}
		admins, err := db.AdminTokensByHashes(ctx, hs)
		if err != nil {
			t.Fatalf("%d hashes: %v", n, err)
		}
		if len(admins) != 1 || admins[live].Name != "live" || admins[live].Hash != live {
			t.Fatalf("%d hashes: admin tokens %v", n, admins)
		}
	}
}

func testSecretGrace(t *testing.T, b storetest.Backend) {
	db := b.DB
	addKeyring(t, db, 1)
	now := time.Now()
	put(t, db, "k", 1, 1)
	put(t, db, "k", 2, 1)
	keep := func(version int, until time.Time) {
		t.Helper()
		err := db.PutSecretKeeping(ctx, store.Secret{Name: "k", Version: version, KEKVersion: 1,
			WrappedDEK: []byte("dek"), Ciphertext: []byte(fmt.Sprintf("ct-k-%d", version)), CreatedAt: now}, until)
		if err != nil {
			t.Fatal(err)
		}
	}
	keep(3, now.Add(time.Minute))
	tests := []struct {
		version int
		at      time.Time
		want    string // "" = not found
	}{
		{3, now, "ct-k-3"},
		{2, now, "ct-k-2"},            // replaced, in grace
		{2, now.Add(time.Minute), ""}, // grace over, not yet swept
		{1, now, ""},                  // replaced before: gone at once
		{4, now, ""},                  // never written
	}
	for _, tt := range tests {
		s, err := db.GetSecretVersion(ctx, "k", tt.version, tt.at)
		if tt.want == "" {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("v%d at +%v: %v, want not found", tt.version, tt.at.Sub(now), err)
			}
			continue
		}
		if err != nil || string(s.Ciphertext) != tt.want {
			t.Errorf("v%d = %q %v, want %q", tt.version, s.Ciphertext, err, tt.want)
		}
	}
	if g, err := db.GetSecret(ctx, "k"); err != nil || g.Version != 3 {
		t.Fatalf("live = v%d %v, want v3", g.Version, err)
	}
	if list, err := db.ListSecrets(ctx); err != nil || len(list) != 1 || list[0].Version != 3 {
		t.Fatalf("list = %+v %v: a version in grace must not be listed", list, err)
	}
	// A second rotation during grace: v2 goes at once, v3 is kept.
	keep(4, now.Add(time.Minute))
	if _, err := db.GetSecretVersion(ctx, "k", 2, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("v2 after a second rotation: %v", err)
	}
	if n, err := db.RetireSecrets(ctx, now); err != nil || n != 0 {
		t.Fatalf("retire before grace ends = %d %v", n, err)
	}
	if n, err := db.RetireSecrets(ctx, now.Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("retire = %d %v, want 1", n, err)
	}
	var left int
	if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM secrets WHERE ciphertext = ?`), []byte("ct-k-3")).Scan(&left); err != nil || left != 0 {
		t.Fatalf("retired ciphertext kept: %d %v", left, err)
	}
	// Deleting destroys a version in grace too, and the rotation.
	keep(5, now.Add(time.Hour))
	if err := db.SetRotation(ctx, "k", "{}", nil, now); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteSecret(ctx, "k", now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetSecretVersion(ctx, "k", 4, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("v4 in grace after delete: %v", err)
	}
	if _, err := db.GetRotation(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rotation after delete: %v", err)
	}
}

func testRotations(t *testing.T, b storetest.Backend) {
	db := b.DB
	now := time.Unix(1_800_000_000, 0).UTC()
	if err := db.SetRotation(ctx, "b", `{"every":"1h"}`, nil, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.SetRotation(ctx, "a", `{"every":"2h"}`, nil, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	due, err := db.DueRotations(ctx, now, 10)
	if err != nil || len(due) != 1 || due[0].Name != "a" || due[0].Spec != `{"every":"2h"}` {
		t.Fatalf("due = %+v %v", due, err)
	}
	if _, err := db.ClaimRotation(ctx, "nope", "n1", now, now.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim of nothing: %v", err)
	}
	// Two nodes, each on its own handle, claim at once: exactly one wins.
	other := b.Another(t)
	var wg sync.WaitGroup
	wins := make([]bool, 2)
	for i, h := range []*store.DB{db, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.ClaimRotation(ctx, "a", fmt.Sprint("n", i), now, now.Add(time.Minute))
			wins[i] = err == nil
			if err != nil && !errors.Is(err, store.ErrConflict) {
				t.Errorf("claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins[0] == wins[1] {
		t.Fatalf("claims won = %v, want exactly one", wins)
	}
	winner, loser := "n0", "n1"
	if wins[1] {
		winner, loser = "n1", "n0"
	}
	if due, _ := db.DueRotations(ctx, now, 10); len(due) != 0 {
		t.Fatalf("a claimed rotation is still due: %+v", due)
	}
	if err := db.FinishRotation(ctx, "a", loser, store.RotationOutcome{At: now, Version: 2, NextAt: now}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("finish by the loser: %v", err)
	}
	// A failure counts, keeps the last success, and releases the claim.
	if err := db.FinishRotation(ctx, "a", winner, store.RotationOutcome{At: now, Error: "boom", NextAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	r, err := db.GetRotation(ctx, "a")
	if err != nil || r.Failures != 1 || r.LastError != "boom" || !r.LastErrorAt.Equal(now) || !r.NextAt.Equal(now.Add(time.Minute)) || !r.LastAt.IsZero() {
		t.Fatalf("after failure = %+v %v", r, err)
	}
	// A claim that ran out lets another node take over; the late node
	// cannot record over it.
	if _, err := other.ClaimRotation(ctx, "a", "n9", now, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	later := now.Add(2 * time.Second)
	if _, err := db.ClaimRotation(ctx, "a", "n8", later, later.Add(time.Minute)); err != nil {
		t.Fatalf("claim after expiry: %v", err)
	}
	if err := other.FinishRotation(ctx, "a", "n9", store.RotationOutcome{At: later, Version: 7, NextAt: later}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("finish by an expired claim: %v", err)
	}
	if err := db.FinishRotation(ctx, "a", "n8", store.RotationOutcome{At: later, Version: 3, NextAt: later.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r, err = db.GetRotation(ctx, "a")
	if err != nil || r.Failures != 0 || r.LastError != "" || r.LastVersion != 3 || !r.LastAt.Equal(later) || !r.NextAt.Equal(later.Add(2*time.Hour)) {
		t.Fatalf("after success = %+v %v", r, err)
	}
	// Changing the settings keeps the history.
	if err := db.SetRotation(ctx, "a", `{"every":"3h"}`, nil, later.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	all, err := db.Rotations(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "a" || all[0].Spec != `{"every":"3h"}` || all[0].LastVersion != 3 {
		t.Fatalf("rotations = %+v %v", all, err)
	}
	if err := db.DeleteRotation(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRotation(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// pendingCount is the number of pending audit records in db.
func pendingCount(t *testing.T, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Sessions are swept a day after they expire (a session list still shows
// them); abandoned sign-ins as soon as they expire, so that their number
// stays bounded by how many may be started within their lifetime.
func testSweepAdminSessions(t *testing.T, b storetest.Backend) {
	db := b.DB
	now := time.Now()
	logins := map[string]time.Time{"expired": now.Add(-time.Second), "live": now.Add(10 * time.Minute)}
	for k, exp := range logins {
		if err := db.PutAdminLogin(ctx, [32]byte{k[0]}, "state", []byte("{}"), exp); err != nil {
			t.Fatal(err)
		}
	}
	ses := store.AdminSession{ID: "ses_recent", Hash: [32]byte{1}, Name: "n", Subject: "s", Role: "admin", Via: "browser", Source: "127.0.0.1",
		CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
	if err := db.CreateAdminSessionNoted(ctx, ses, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.SweepAdminSessions(ctx, now.Add(-24*time.Hour), now); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM admin_logins`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d sign-ins left (%v), want the live one", n, err)
	}
	if _, err := db.TakeAdminLogin(ctx, [32]byte{'l'}, "state", now); err != nil {
		t.Fatalf("the live sign-in was swept: %v", err)
	}
	if _, err := db.AdminSessionByHash(ctx, ses.Hash); err != nil {
		t.Fatalf("a session expired an hour ago was swept: %v", err)
	}
}
