//go:build linux && !mayfly_nojournal

package auditlog

import (
	"context"
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
	if _, err := l.Recorded(wctx, since, []int64{pid})[0].Wait(wctx); err == nil {
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
