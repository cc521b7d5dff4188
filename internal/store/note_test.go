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
			pending := func() int {
				var n int
				if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
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
