package auditlog

import (
	"context"
	"errors"
	"fmt"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// recordAction commits an action (a lease insert) that writes ev as its
// own pending record, and returns the record's pending id.
func recordAction(t *testing.T, db *store.DB, rec []byte, id string) int64 {
	t.Helper()
	n := &store.Note{Make: func(store.Changes) ([][]byte, error) { return [][]byte{rec}, nil }}
	now := time.Now()
	l := store.Lease{ID: id, Hash: [32]byte{byte(len(id)), id[len(id)-1]}, Issuer: "ci", Subject: "s", Claims: map[string]string{},
		Grants: []string{"deploy"}, IssuedAt: now, ExpiresAt: now.Add(time.Minute), MaxExpiresAt: now.Add(time.Hour), Note: n}
	if err := db.InsertLease(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if len(n.PIDs) != 1 {
		t.Fatalf("%d pending ids for one record", len(n.PIDs))
	}
	return n.PIDs[0]
}

// checkOnce verifies the log and finds exactly one entry of lease id.
func checkOnce(t *testing.T, db *store.DB, id string) {
	t.Helper()
	ctx := context.Background()
	res, err := audit.Verify(ctx, db, testVerifier, audit.VerifyOptions{})
	if err != nil || !res.OK() {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	lines, err := db.AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range lines {
		e, err := audit.ParseEntry(line)
		if err != nil {
			t.Fatal(err)
		}
		if e.Lease == id {
			n++
		}
	}
	var pending int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if n != 1 || pending != 0 {
		t.Fatalf("%d entries of %s and %d pending records, want 1 and 0", n, id, pending)
	}
}

// An action that wrote its entry as a pending record and was then cut off
// from its log (the process died between its commit and the entry's
// sequencing) has its entry in the log after the next Open: once, at the
// index Wait reports. Every way a node runs: alone without a journal,
// alone with one (Linux), sharing PostgreSQL (where Wait answers at once,
// index -1: the entry is durable, and its index is the sequencer's to
// give, which it does by the next Close at the latest).
func TestPendingRecordsSurviveAStop(t *testing.T) {
	type mode struct {
		name string
		db   func(t *testing.T) *store.DB
		opts func(t *testing.T) Options
	}
	modes := []mode{
		{"sqlite", func(t *testing.T) *store.DB { return storetest.SQLite(t).DB }, func(*testing.T) Options { return Options{} }},
		{"postgres shared", func(t *testing.T) *store.DB { storetest.PostgresDSN(t); return storetest.Postgres(t).DB }, func(*testing.T) Options { return Options{Shared: true} }},
	}
	if JournalSupported() {
		modes = append(modes, mode{"sqlite journal", func(t *testing.T) *store.DB { return storetest.SQLite(t).DB },
			func(t *testing.T) Options { return Options{Journal: pendingJournal(t)} }})
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctx := context.Background()
			db := m.db(t)
			opts := m.opts(t)
			l, err := Open(ctx, db, testSigner, opts)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := l.Record(audit.Event{Type: audit.TypeExchange, Lease: "lse_stopped", Status: 200})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Record(audit.Event{Type: audit.TypeExchange}); !errors.Is(err, ErrClosed) {
				t.Fatalf("Record after Close: %v", err)
			}
			pid := recordAction(t, db, rec, "lse_stopped")
			// The closed log cannot place it: its Future says so, at once.
			if idx, err := l.Recorded(ctx, 0, []int64{pid}, nil)[0].Wait(ctx); opts.Shared && (idx != -1 || err != nil) ||
				!opts.Shared && !errors.Is(err, ErrClosed) {
				t.Fatalf("Future of a closed log: %d, %v", idx, err)
			}
			l2, err := Open(ctx, db, testSigner, opts)
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					l2.Close(ctx)
				}
			}()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			futs := l2.Recorded(wctx, 0, []int64{pid}, nil)
			if len(futs) != 1 {
				t.Fatalf("%d Futures for one pending id", len(futs))
			}
			idx, err := futs[0].Wait(wctx)
			if err != nil || opts.Shared && idx != -1 {
				t.Fatalf("Wait = %v, %v", idx, err)
			}
			// And an action while the log runs: its index comes after.
			since := l2.Size()
			rec2, err := l2.Record(audit.Event{Type: audit.TypeExchange, Lease: "lse_running", Status: 200})
			if err != nil {
				t.Fatal(err)
			}
			pid2 := recordAction(t, db, rec2, "lse_running")
			idx2, err := l2.Recorded(wctx, since, []int64{pid2}, nil)[0].Wait(wctx)
			if err != nil || !opts.Shared && idx2 <= idx || opts.Shared && idx2 != -1 {
				t.Fatalf("Wait = %v, %v (the first at %d)", idx2, err, idx)
			}
			// Asked again, later: the same answer, from what the log
			// remembers.
			if again, err := l2.Recorded(wctx, since, []int64{pid2}, nil)[0].Wait(wctx); err != nil || again != idx2 {
				t.Fatalf("asked again: %v, %v; want %d", again, err, idx2)
			}
			if opts.Shared {
				// Sequenced by now or at the latest by Close, which signs
				// a checkpoint of them.
				closed = true
				if err := l2.Close(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := l2.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			checkOnce(t, db, "lse_stopped")
			checkOnce(t, db, "lse_running")
		})
	}
}

// take hands over only the records that come next in pending-id order,
// and forgets those sequenced already.
func TestAwaitsTake(t *testing.T) {
	cases := []struct {
		after  int64
		handed []int64
		limit  int
		want   []int64
	}{
		{after: 4, handed: []int64{5, 6, 8}, limit: 10, want: []int64{5, 6}},
		{after: 6, handed: []int64{5, 6, 8}, limit: 10, want: nil},
		{after: 7, handed: []int64{8, 9}, limit: 1, want: []int64{8}},
		{after: 0, handed: nil, limit: 10, want: nil},
	}
	for _, tc := range cases {
		var a awaits
		a.init()
		for _, id := range tc.handed {
			a.handed[id] = []byte(fmt.Sprint(id))
		}
		ids, recs := a.take(tc.after, tc.limit)
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("take(%d) of %v = %v, want %v", tc.after, tc.handed, ids, tc.want)
		}
		for i, id := range ids {
			if string(recs[i]) != fmt.Sprint(id) {
				t.Errorf("record of %d is %q", id, recs[i])
			}
		}
		for id := range a.handed {
			if id <= tc.after {
				t.Errorf("take(%d) kept the record of %d", tc.after, id)
			}
		}
	}
}
