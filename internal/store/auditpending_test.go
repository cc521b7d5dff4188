package store

import (
	"context"
	"testing"
	"time"
)

// On PostgreSQL, a budget of 5 connections or more gives the node an audit
// writer: written-mode pending records are one statement on it, outside
// the batcher's transactions, and the batcher still makes them durable
// within SyncDelay (a flush commit follows) and at Close. Durable records
// and smaller budgets take the pool's transaction path. From 6 on the
// lease feed reads on a connection of its own, on generic plans.
func TestAuditWriter(t *testing.T) {
	ctx := context.Background()
	pg := postgresSyncBackend(t)
	recs := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	cases := []struct {
		budget int
		writer bool
		feed   bool
		pool   int
	}{
		{4, false, false, 2},
		{5, true, false, 2},
		{6, true, true, 2},
		{0, true, true, DefaultMaxConns - 4}, // the default budget
	}
	for _, c := range cases {
		var commits commitLog
		cfg := pg.cfg
		cfg.MaxConns = c.budget
		cfg.ObserveCommit = commits.observe
		cfg.SyncDelay = 200 * time.Millisecond
		db, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := db.auditW != nil; got != c.writer {
			t.Fatalf("budget %d: audit writer %v, want %v", c.budget, got, c.writer)
		}
		if got := db.write.Stats().MaxOpenConnections; got != c.pool {
			t.Fatalf("budget %d: pool of %d, want %d", c.budget, got, c.pool)
		}
		if got := db.feed != nil; got != c.feed {
			t.Fatalf("budget %d: feed reader %v, want %v", c.budget, got, c.feed)
		}
		if c.feed {
			for name, want := range map[string]string{"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"} {
				var got string
				if err := db.feed.QueryRowContext(ctx, `SELECT current_setting($1)`, name).Scan(&got); err != nil || got != want {
					t.Fatalf("budget %d: feed reader's %s is %q (%v), want %q", c.budget, name, got, err, want)
				}
			}
		}
		if _, err := db.LeaseFeedRead(ctx, LeaseFeedRequest{Back: []BackRead{{Xact: 1, After: 0, Upto: 10}}}); err != nil {
			t.Fatalf("budget %d: lease feed: %v", c.budget, err)
		}
		n := commits.count()
		ids, err := db.AddAuditPending(ctx, recs, AuditWritten)
		if err != nil || len(ids) != 3 || ids[0] >= ids[1] || ids[1] >= ids[2] {
			t.Fatalf("budget %d: AddAuditPending = %v, %v", c.budget, ids, err)
		}
		if c.writer {
			// Not a batcher commit; its flush is.
			commits.waitCount(t, n+1)
			if !db.batch.extUnsynced().IsZero() {
				t.Fatalf("budget %d: the flush did not cover the audit writer's commit", c.budget)
			}
		} else {
			commits.waitCount(t, n+2) // the transaction and its flush
		}
		seq, err := db.TryAuditSequencer(ctx)
		if err != nil || seq == nil {
			t.Fatalf("sequencer: %v, %v", seq, err)
		}
		got, data, err := seq.Pending(ctx, 0, 100, nil)
		seq.Close()
		if err != nil || len(got) != 3 || string(data[0])+string(data[1])+string(data[2]) != "abc" || got[0] != ids[0] || got[2] != ids[2] {
			t.Fatalf("budget %d: pending %v %q, %v; want %v", c.budget, got, data, err, ids)
		}
		if _, err := db.SQL().ExecContext(ctx, `DELETE FROM audit_pending`); err != nil {
			t.Fatal(err)
		}
		// Durable records: a transaction of the pool.
		n = commits.count()
		if _, err := db.AddAuditPending(ctx, recs[:1], AuditDurable); err != nil {
			t.Fatal(err)
		}
		if commits.count() != n+1 {
			t.Fatalf("budget %d: a durable record made %d batcher commits, want 1", c.budget, commits.count()-n)
		}
		// A written one just before Close is made durable by it.
		if _, err := db.AddAuditPending(ctx, recs[:1], AuditWritten); err != nil {
			t.Fatal(err)
		}
		d := db.batch.durables.Load()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if db.batch.durables.Load() == d || !db.batch.unsyncedSince().IsZero() {
			t.Fatalf("budget %d: Close left a written record unsynced", c.budget)
		}
		if _, err := db.AddAuditPending(ctx, recs[:1], AuditWritten); err == nil {
			t.Fatalf("budget %d: a record after Close was taken", c.budget)
		}
		admin := pg.cfg
		adb, err := Open(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		adb.SQL().ExecContext(ctx, `DELETE FROM audit_pending`)
		adb.Close()
	}
}

// A flush makes the written-mode commits before it durable: once it has
// returned, PostgreSQL's WAL is flushed past them. It writes no row (a
// shared row made every node's flushes queue on its lock), so this checks
// the flush itself: a commit that wrote no WAL would not wait for the
// disk. The WAL writer also flushes on its own every 200 ms, so one pass
// could be lucky; ten in a row are not.
func TestFlushReachesDisk(t *testing.T) {
	ctx := context.Background()
	pg := postgresSyncBackend(t)
	cfg := pg.cfg
	cfg.SyncDelay = time.Millisecond
	db, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 10 {
		if _, err := db.AddAuditPending(ctx, [][]byte{[]byte("x")}, AuditWritten); err != nil {
			t.Fatal(err)
		}
		var written string
		if err := db.read.QueryRowContext(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&written); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); !db.batch.extUnsynced().IsZero(); time.Sleep(100 * time.Microsecond) {
			if time.Now().After(deadline) {
				t.Fatal("no flush within 5s")
			}
		}
		var flushed bool
		if err := db.read.QueryRowContext(ctx, `SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn`, written).Scan(&flushed); err != nil {
			t.Fatal(err)
		}
		if !flushed {
			t.Fatalf("pass %d: the flush returned with the WAL not flushed to %s", i, written)
		}
	}
	db.SQL().ExecContext(ctx, `DELETE FROM audit_pending`)
}

// postgresSyncBackend is syncBackends' PostgreSQL one; the test is skipped
// without one.
func postgresSyncBackend(t *testing.T) syncBackend {
	for _, be := range syncBackends(t) {
		if be.cfg.PostgresDSN != "" {
			return be
		}
	}
	t.Skip("PostgreSQL only (MAYFLY_TEST_POSTGRES)")
	return syncBackend{}
}

// The sequencer reads and deletes pending records through the primary key
// even once PostgreSQL has analysed audit_pending while it was small, when
// its planner prefers a sequential scan (each one then walks every dead
// row left since the last vacuum: ~2 ms a batch in a 3-node bench). Its
// session goes back to the pool without its settings.
func TestAuditSequencerIndexScans(t *testing.T) {
	ctx := context.Background()
	pg := postgresSyncBackend(t)
	db, err := Open(ctx, pg.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs := make([][]byte, 40)
	for i := range recs {
		recs[i] = []byte("record")
	}
	pids, err := db.AddAuditPending(ctx, recs, AuditDurable)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `ANALYZE audit_pending`); err != nil {
		t.Fatal(err)
	}
	seq, err := db.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		t.Fatalf("sequencer: %v, %v", seq, err)
	}
	// The sequencer's session (the pool's before) reports its counts
	// when it next goes idle after this.
	seqScans := func() int64 {
		if _, err := seq.conn.ExecContext(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		var n int64
		q := `SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'audit_pending'`
		if err := db.SQL().QueryRowContext(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := seqScans()
	start := int64(0)
	for round := range 4 {
		got, data, err := seq.Pending(ctx, 0, 10, pids[:round])
		if err != nil || len(got) != 10 {
			t.Fatalf("round %d: pending %v, %v", round, got, err)
		}
		hs := make([][32]byte, len(data))
		if err := seq.Sequence(ctx, start, data, got, nil, start, hs); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		start += int64(len(data))
	}
	if n := seqScans() - before; n != 0 {
		t.Fatalf("the sequencer scanned audit_pending sequentially %d times", n)
	}
	pid := seq.SessionPID()
	if err := seq.Close(); err != nil {
		t.Fatal(err)
	}
	// Every connection the pool can give, held at once.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conns := db.SQL().Stats().MaxOpenConnections
	if conns == 0 {
		t.Fatal("the pool has no connection limit: holding every connection at once is not possible")
	}
	for range conns {
		c, err := db.SQL().Conn(cctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var got int64
		var mode string
		if err := c.QueryRowContext(ctx, `SELECT pg_backend_pid(), current_setting('plan_cache_mode')`).Scan(&got, &mode); err != nil {
			t.Fatal(err)
		}
		if got == pid || mode != "auto" {
			t.Fatalf("the pool serves the sequencer's session %d (plan_cache_mode %s)", pid, mode)
		}
	}
}
