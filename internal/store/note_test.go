package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// An action's audit record is written in the action's own transaction:
// a record that cannot be made undoes the action, and a committed action
// leaves exactly its records pending, with their ids.
func TestNoteCommitsWithItsAction(t *testing.T) {
	ctx := context.Background()
	errMake := errors.New("cannot make the record")
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			db := b.DB
			pending := func() int { return pendingCount(t, db) }
			now := time.Now()
			l := store.Lease{ID: "lse_n", Hash: [32]byte{7}, Issuer: "ci", Subject: "s", Claims: map[string]string{}, Grants: []string{"deploy"},
				IssuedAt: now, ExpiresAt: now.Add(time.Minute), MaxExpiresAt: now.Add(time.Hour)}
			fail := &store.Note{Make: func(store.Changes) ([][]byte, error) { return nil, errMake }}
			tests := []struct {
				name string
				do   func(n *store.Note) error
			}{
				{"insert", func(n *store.Note) error { l := l; l.Note = n; return db.InsertLease(ctx, l) }},
				{"renew", func(n *store.Note) error { return db.RenewLeaseNoted(ctx, "lse_n", now.Add(2*time.Minute), now, n) }},
				{"revoke", func(n *store.Note) error {
					_, err := db.RevokeLeasesNoted(ctx, store.LeaseFilter{ID: "lse_n"}, now, "t", n)
					return err
				}},
			}
			for _, tt := range tests {
				if err := tt.do(fail); !errors.Is(err, store.ErrNoteFailed) || !errors.Is(err, errMake) {
					t.Fatalf("%s with a failing record: %v", tt.name, err)
				}
				if pending() != 0 {
					t.Fatalf("%s: a record of an undone action", tt.name)
				}
				var got []store.Changes
				ok := &store.Note{Make: func(c store.Changes) ([][]byte, error) {
					got = append(got[:0], c)
					return [][]byte{[]byte("a"), []byte("b")}, nil
				}}
				if err := tt.do(ok); err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if len(ok.PIDs) != 2 || ok.PIDs[0] >= ok.PIDs[1] || len(got) != 1 || len(got[0].Leases) != 1 || got[0].Leases[0] != "lse_n" {
					t.Fatalf("%s: pids %v, changes %+v", tt.name, ok.PIDs, got)
				}
				if _, err := db.SQL().ExecContext(ctx, `DELETE FROM audit_pending`); err != nil {
					t.Fatal(err)
				}
			}
			// Each failed action left nothing behind: the same action then
			// succeeded on the same lease (a revocation, say, revoked it).
		})
	}
}

// Secret writes, deletes and keyring versions (master-key rotations) carry
// their audit record the same way: a record that cannot be made leaves the
// secrets and the keyring as they were, and a change the store refuses
// (a version taken, nothing to delete) leaves no record.
func TestSecretChangesCommitWithTheirNote(t *testing.T) {
	ctx := context.Background()
	errMake := errors.New("cannot make the record")
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			db := b.DB
			pending := func() int { return pendingCount(t, db) }
			now := time.Now()
			sec := func(v int) store.Secret {
				return store.Secret{Name: "gh", Version: v, KEKVersion: 1, WrappedDEK: []byte("w"), Ciphertext: []byte("c"), CreatedAt: now}
			}
			if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: 1, Sealed: []byte("k1"), CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
			if err := db.PutSecret(ctx, sec(1)); err != nil {
				t.Fatal(err)
			}
			live := func() int {
				s, err := db.GetSecret(ctx, "gh")
				if errors.Is(err, store.ErrNotFound) {
					return 0
				}
				if err != nil {
					t.Fatal(err)
				}
				return s.Version
			}
			keys := func() int {
				kvs, err := db.KeyVersions(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return len(kvs)
			}
			fail := &store.Note{Make: func(store.Changes) ([][]byte, error) { return nil, errMake }}
			tests := []struct {
				name    string
				do      func(n *store.Note) error
				refused func(n *store.Note) error // the same change, refused by the store
				state   func() int                // what the change changes
			}{
				{"put", func(n *store.Note) error { return db.PutSecretNoted(ctx, sec(2), time.Time{}, n) },
					func(n *store.Note) error { return db.PutSecretNoted(ctx, sec(2), time.Time{}, n) }, live},
				{"delete", func(n *store.Note) error { return db.DeleteSecretNoted(ctx, "gh", now, n) },
					func(n *store.Note) error { return db.DeleteSecretNoted(ctx, "gh", now, n) }, live},
				{"key version", func(n *store.Note) error {
					return db.AddKeyVersionNoted(ctx, store.KeyVersion{Version: 2, Sealed: []byte("k2"), CreatedAt: now}, n)
				}, func(n *store.Note) error {
					return db.AddKeyVersionNoted(ctx, store.KeyVersion{Version: 2, Sealed: []byte("other"), CreatedAt: now}, n)
				}, keys},
			}
			for _, tt := range tests {
				before := tt.state()
				if err := tt.do(fail); !errors.Is(err, store.ErrNoteFailed) || !errors.Is(err, errMake) {
					t.Fatalf("%s with a failing record: %v", tt.name, err)
				}
				if pending() != 0 || tt.state() != before {
					t.Fatalf("%s: %d records, state %d (was %d): the change or its record stayed", tt.name, pending(), tt.state(), before)
				}
				ok := &store.Note{Make: func(store.Changes) ([][]byte, error) { return [][]byte{[]byte("a")}, nil }}
				if err := tt.do(ok); err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if len(ok.PIDs) != 1 || pending() != 1 || tt.state() == before {
					t.Fatalf("%s: pids %v, %d records, state %d (was %d)", tt.name, ok.PIDs, pending(), tt.state(), before)
				}
				// Done already: the store refuses it again, and writes no record.
				again := &store.Note{Make: func(store.Changes) ([][]byte, error) { return [][]byte{[]byte("b")}, nil }}
				if err := tt.refused(again); err == nil || errors.Is(err, store.ErrNoteFailed) {
					t.Fatalf("%s again: %v", tt.name, err)
				}
				if pending() != 1 {
					t.Fatalf("%s refused, yet %d records", tt.name, pending())
				}
				if _, err := db.SQL().ExecContext(ctx, `DELETE FROM audit_pending`); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
