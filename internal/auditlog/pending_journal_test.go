//go:build linux && !mayfly_nojournal

package auditlog

import (
	"bytes"
	"context"
	"fmt"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"os"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

func pendingJournal(t *testing.T) string { return journalPath(t) }

// With a journal, an action's pending record becomes a journal record
// naming it before it is folded into the store. A crash between the two
// (here: the store refuses the fold, and the log is abandoned) leaves it
// in both; the next Open folds it once and deletes the pending record in
// the same transaction, so it is neither lost nor recorded twice.
func TestJournaledPendingRecordReplaysOnce(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	path := journalPath(t)
	l, err := Open(ctx, db, testSigner, Options{Journal: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.appendDurable(ctx, audit.Event{Type: audit.TypeServerStart, Status: 200}); err != nil {
		t.Fatal(err)
	}
	// The store stops taking audit entries (not the action's write).
	if _, err := db.SQL().ExecContext(ctx, `CREATE TRIGGER no_entries BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'injected'); END`); err != nil {
		t.Fatal(err)
	}
	since := l.Size()
	rec, err := l.Record(audit.Event{Type: audit.TypeExchange, Lease: "lse_crash", Status: 200})
	if err != nil {
		t.Fatal(err)
	}
	pid := recordAction(t, db, rec, "lse_crash")
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := l.Recorded(wctx, since, []int64{pid}, nil)[0].Wait(wctx); err == nil {
		t.Fatal("Wait succeeded while the store refuses entries")
	}
	cancel()
	l.Close(ctx) // cannot fold it either: the journal keeps it
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, _ := readJournal(raw)
	c := parseRecords(recs)
	if len(c.pids) != 1 {
		t.Fatalf("journal holds %d entries of pending records, want 1", len(c.pids))
	}
	if _, err := db.SQL().ExecContext(ctx, `DROP TRIGGER no_entries`); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(ctx, db, testSigner, Options{Journal: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close(ctx)
	if l2.Recovered() != 1 {
		t.Fatalf("recovered %d entries, want 1", l2.Recovered())
	}
	time.Sleep(50 * time.Millisecond) // a sequencing round after the replay
	if err := l2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkOnce(t, db, "lse_crash")
}

func journalPathTB(tb testing.TB) string { return journalPath(tb) }

// Actions hand their records to the log (Recorded's recs) so that the
// journal loop need not read them back; records are still sequenced in
// pending-id order whichever action calls Recorded first, and with or
// without its records, and each is in the log once.
func TestHandedRecordsKeepOrder(t *testing.T) {
	cases := []struct {
		name   string
		calls  []int  // which action calls Recorded, in turn (all committed first)
		handed []bool // whether that call hands its record over
	}{
		{"in order, handed", []int{0, 1, 2}, []bool{true, true, true}},
		{"last first", []int{2, 0, 1}, []bool{true, true, true}},
		{"mixed", []int{1, 0, 2}, []bool{true, false, true}},
		{"none handed", []int{2, 1, 0}, []bool{false, false, false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := storetest.SQLite(t).DB
			l, err := Open(ctx, db, testSigner, Options{Journal: journalPath(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(ctx)
			since := l.Size()
			var pids []int64
			var recs [][]byte
			for i := range 3 {
				id := fmt.Sprintf("lse_hand%d", i)
				rec, err := l.Record(audit.Event{Type: audit.TypeExchange, Lease: id, Status: 200})
				if err != nil {
					t.Fatal(err)
				}
				pids, recs = append(pids, recordAction(t, db, rec, id)), append(recs, rec)
			}
			idx := make([]int64, 3)
			for k, a := range tc.calls {
				var r [][]byte
				if tc.handed[k] {
					r = recs[a : a+1]
				}
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				idx[a], err = l.Recorded(wctx, since, pids[a:a+1], r)[0].Wait(wctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
			if !(idx[0] < idx[1] && idx[1] < idx[2]) {
				t.Fatalf("indexes %v for pending ids %v: not in pending-id order", idx, pids)
			}
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				checkOnce(t, db, fmt.Sprintf("lse_hand%d", i))
			}
		})
	}
}

// A pending record's journal record needs no fdatasync of its own: the
// store holds the record durably (the action's commit), and a power cut
// that loses the journal record loses its fold with it, so it is sequenced
// again. An action alone therefore leaves the journal's mirror unsynced,
// while an entry that only the journal keeps still has it synced, pending
// records included.
func TestPendingRecordsNeedNoJournalSync(t *testing.T) {
	cases := []struct {
		name     string
		written  bool // a request's entry is journaled after the action's
		wantSync bool
	}{
		{"action alone", false, false},
		{"action then a request", true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := storetest.SQLite(t).DB
			l, err := Open(ctx, db, testSigner, Options{Journal: journalPath(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(ctx)
			time.Sleep(3 * syncDelay) // what Open journaled is synced
			l.js.mu.Lock()
			active := l.js.j.active
			l.js.mu.Unlock()
			synced := l.js.j.synced[active] // the committer's; it is idle
			since := l.Size()
			rec, err := l.Record(audit.Event{Type: audit.TypeExchange, Lease: "lse_nosync", Status: 200})
			if err != nil {
				t.Fatal(err)
			}
			pid := recordAction(t, db, rec, "lse_nosync")
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := l.Recorded(wctx, since, []int64{pid}, [][]byte{rec})[0].Wait(wctx); err != nil {
				t.Fatal(err)
			}
			if tc.written {
				if _, err := l.appendWritten(ctx, audit.Event{Type: audit.TypeServerStart, Status: 200}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(4 * syncDelay)
			l.js.mu.Lock()
			end := l.js.j.size[active]
			l.js.mu.Unlock()
			deadline := time.Now().Add(2 * time.Second)
			for tc.wantSync && l.syncedTo(active) < end && time.Now().Before(deadline) {
				time.Sleep(syncDelay)
			}
			got := l.syncedTo(active)
			switch {
			case tc.wantSync && got < end:
				t.Fatalf("journal synced to %d of %d: the request's entry is not durable", got, end)
			case !tc.wantSync && got != synced:
				t.Fatalf("journal synced from %d to %d for a pending record alone", synced, got)
			}
			checkOnce(t, db, "lse_nosync")
		})
	}
}

// syncedTo is how much of journal file i its mirror holds durably, read
// in the committer's loop (it alone writes it).
func (l *Log) syncedTo(i int) int64 {
	l.js.mu.Lock()
	defer l.js.mu.Unlock()
	return l.js.j.synced[i]
}

// When the journal moves to its other file, the old one is synced before
// its fold only for records the store does not hold durably: pending
// records alone are not copied to its mirror (they were, all at once, up
// to the reset size), while an entry only the journal keeps is there.
func TestJournalSwitchSyncsOnlyWhatItKeeps(t *testing.T) {
	cases := []struct {
		name    string
		written bool // a request's entry is journaled before the actions'
	}{
		{"actions alone", false},
		{"a request, then actions", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := storetest.SQLite(t).DB
			path := journalPath(t)
			l, err := Open(ctx, db, testSigner, Options{Journal: path})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(ctx)
			time.Sleep(3 * syncDelay)
			l.js.mu.Lock()
			first := l.js.j.active
			l.js.resetSize = 1 << 30 // no switch until the records are in
			l.js.mu.Unlock()
			mirror := path + ".sync"
			if first == 1 {
				mirror = path + ".1.sync"
			}
			var want int64 // record bytes the mirror must hold
			if tc.written {
				if _, err := l.appendWritten(ctx, audit.Event{Type: audit.TypeServerStart, Status: 200}); err != nil {
					t.Fatal(err)
				}
				l.js.mu.Lock()
				want = l.js.j.size[first] - fileHeader
				l.js.mu.Unlock()
			}
			action := func(i int) {
				id := fmt.Sprintf("lse_switch%d", i)
				rec, err := l.Record(audit.Event{Type: audit.TypeExchange, Lease: id, Status: 200})
				if err != nil {
					t.Fatal(err)
				}
				since := l.Size()
				pid := recordAction(t, db, rec, id)
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if _, err := l.Recorded(wctx, since, []int64{pid}, [][]byte{rec})[0].Wait(wctx); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 3 {
				action(i)
			}
			time.Sleep(3 * syncDelay) // any sync due is made
			l.js.mu.Lock()
			l.js.resetSize = 1 // the next action's fold switches files
			l.js.mu.Unlock()
			action(3)
			waitFor(t, func() bool {
				l.js.mu.Lock()
				defer l.js.mu.Unlock()
				return l.js.j.active != first && l.js.old < 0
			})
			// A sync for the request covers whatever was journaled before
			// it ran: pending records written meanwhile may be there too.
			got := mirrorHolds(t, mirror)
			if tc.written && got < want || !tc.written && got != 0 {
				t.Fatalf("old file's mirror holds %d record bytes; the request's entry is %d (pending records alone: none)", got, want)
			}
			for i := range 4 {
				checkOnce(t, db, fmt.Sprintf("lse_switch%d", i))
			}
		})
	}
}

// mirrorHolds is how many bytes of records a fresh journal file's mirror
// was given (it is preallocated with zeros; a record does not end in one).
func mirrorHolds(t *testing.T, path string) int64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(bytes.TrimRight(raw[fileHeader:], "\x00")))
}
