package auditlog

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// forgedPending are rows a database writer (without audit.key) might put
// into audit_pending, none of which a node wrote.
var forgedPending = []struct {
	name string
	rec  []byte
}{
	// A chosen time, a year back, and a duplicate "status" so that json
	// readers disagree on the outcome.
	{"unsealed", []byte("2025-01-01T00:00:00Z\n" + `{"type":"admin.token.create","admin":"alice","status":200,"role":"admin","status":403}`)},
	{"sealed, body changed", func() []byte {
		r := sealed([]byte("2026-12-06T10:00:00.000000001Z\n" + `{"type":"admin.token.create","admin":"bob","status":200}`))
		return bytes.Replace(r, []byte(`"bob"`), []byte(`"alice"`), 1)
	}()},
	{"sealed, time not as a node writes it", sealed([]byte("2025-01-01T00:00:00+00:00\n" + `{"type":"admin.token.create","admin":"alice","status":200}`))},
	{"garbage", []byte("alice was here")},
}

// TestPendingRecordForgedBySQL: on PostgreSQL (several nodes) the entries
// wait in audit_pending and the sequencer makes them the log's next
// entries. A row a database writer inserts there was signed into the log
// verbatim (its time, its body); a malformed one stopped the sequencer for
// good. Now every pending record carries an HMAC under a key the nodes
// derive from the audit key: a row without a valid one, or with a time no
// node writes, becomes an audit.pending.rejected entry that names it
// (never quotes it), is deleted, and is counted.
func TestPendingRecordForgedBySQL(t *testing.T) {
	ctx := context.Background()
	logs, dbs, _ := sharedNodesWith(t, 1, Options{})
	l, db := logs[0], dbs[0]
	appendN(t, l, 3)
	var pids []int64
	for _, f := range forgedPending {
		var id int64
		if err := db.SQL().QueryRowContext(ctx, `INSERT INTO audit_pending (data) VALUES ($1) RETURNING id`, f.rec).Scan(&id); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, id)
	}
	if _, err := l.appendDurable(ctx, gatewayEvent(9)); err != nil {
		t.Fatal(err)
	}
	want := int64(4 + len(forgedPending))
	waitFor(t, func() bool { return l.Size() >= want })
	if got := counterValue(t, l.metrics.pendingRejected); got != float64(len(forgedPending)) {
		t.Errorf("%v rejections counted, want %d", got, len(forgedPending))
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	checkRejected(t, db, want, pids)
}

// TestPendingRecordForgedOneNode: the same on a node with its store to
// itself, whose committer (or journal loop) sequences the records actions
// write.
func TestPendingRecordForgedOneNode(t *testing.T) {
	ctx := context.Background()
	type mode struct {
		name    string
		journal bool
	}
	modes := []mode{{"committer", false}}
	if JournalSupported() {
		modes = append(modes, mode{"journal", true})
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			db := storetest.SQLite(t).DB
			opts := Options{}
			if m.journal {
				opts.Journal = journalPathTB(t)
			}
			l := openLog(t, db, opts)
			appendN(t, l, 3)
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			var pids []int64
			for _, f := range forgedPending {
				res, err := db.SQL().ExecContext(ctx, `INSERT INTO audit_pending (data) VALUES (?)`, f.rec)
				if err != nil {
					t.Fatal(err)
				}
				id, _ := res.LastInsertId()
				pids = append(pids, id)
			}
			l = openLog(t, db, opts) // sequences what is pending
			want := int64(3 + len(forgedPending))
			waitFor(t, func() bool { return l.Size() >= want })
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			checkRejected(t, db, want, pids)
		})
	}
}

// checkRejected finds, in a log of want entries that verifies, one
// rejection entry per forged pending id, no forged content, and nothing
// left pending.
func checkRejected(t *testing.T, db *store.DB, want int64, pids []int64) {
	t.Helper()
	ctx := context.Background()
	es, err := db.AuditEntries(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(es)) != want {
		t.Fatalf("%d entries, want %d", len(es), want)
	}
	named := map[string]bool{}
	for _, e := range es {
		if bytes.Contains(e, []byte("alice")) || bytes.Contains(e, []byte("2025-01-01")) {
			t.Errorf("forged content signed into the log: %s", e)
		}
		pe, err := audit.ParseEntry(e)
		if err != nil {
			t.Fatalf("entry %s: %v", e, err)
		}
		if pe.Type == audit.TypePendingRejected {
			named[string(strconv.AppendInt(nil, int64(pe.Detail["pending_id"].(float64)), 10))] = true
		}
	}
	for _, id := range pids {
		if !named[strconv.FormatInt(id, 10)] {
			t.Errorf("no %s entry names pending record %d: %q", audit.TypePendingRejected, id, es)
		}
	}
	var pending int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil || pending != 0 {
		t.Errorf("%d records left pending (%v)", pending, err)
	}
	res, err := audit.Verify(ctx, db, testVerifier, audit.VerifyOptions{})
	if err != nil || !res.OK() || res.Checkpoint.Size != want {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}
