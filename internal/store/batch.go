package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// batcher is the group committer: one goroutine takes every pending write,
// runs them in one transaction and commits once, so concurrent writers share
// one durable commit (one fsync) instead of queueing for their own. A write
// that fails is isolated with savepoints so it never undoes its neighbours.
// Write functions may run twice (an optimistic pass, then an isolated one):
// they must set their results afresh on each run.
//
// A caller that batches its own writes (the audit log) commits directly,
// in its goroutine, under the same lock (direct). Such a commit may be in
// written mode: committed without waiting for the disk (SQLite
// synchronous=NORMAL, PostgreSQL synchronous_commit=off), so that once it
// returns a crash of this process cannot lose it, only a crash of the
// machine can. The batcher makes it durable within syncDelay: the next
// commit after that is durable (its fsync covers everything written before
// it), or, when none comes, a flush commit is.
type batcher struct {
	db        *sql.DB
	postgres  bool
	observe   func(time.Duration, int, error)
	between   func() // runs between transactions, when the connection is free
	max       int
	syncDelay time.Duration
	reqs      chan *writeReq
	done      chan struct{}
	stopped   chan struct{}
	once      sync.Once

	kick     chan struct{} // a direct commit left the store unsynced
	durables atomic.Int64  // durable commits made (tests)
	// failed holds the last commit's error (nil after a good one), so
	// readiness can report a store that stopped taking writes without
	// making a write of its own.
	failed atomic.Pointer[error]

	// mu is held while a transaction runs (by run or by direct) and
	// guards the sync state.
	mu       sync.Mutex
	unsynced time.Time  // first written-mode commit not yet covered by a durable one
	mode     sqliteMode // the SQLite connection's synchronous setting as last set
	final    bool       // the committer made its last flush: later commits must be durable

	// Written-mode commits made outside the batcher, on a connection of
	// their own (PostgreSQL's audit writer, noteUnsynced), are covered the
	// same way. Their state has a lock of its own so that such a commit
	// never waits for a group commit: extSince is the first not yet covered
	// by a durable commit, extGen counts them.
	extMu    sync.Mutex
	extSince time.Time
	extGen   uint64
}

type sqliteMode uint8

const (
	modeFull    sqliteMode = iota // as the DSN opens the connection
	modeNormal                    // set for a written-mode batch
	modeUnknown                   // a PRAGMA failed: set FULL again before a durable commit
)

type writeReq struct {
	ctx     context.Context
	fn      func(*sql.Tx) error
	err     chan error
	written bool // a crash of this process must not lose it; the machine's may, within syncDelay
	// kept: written, and something else (the audit journal) keeps it
	// against a crash of the machine, so it sets no durability deadline;
	// the next durable commit covers it.
	kept bool
}

var errClosed = errors.New("store: closed")

func newBatcher(db *sql.DB, postgres bool, max int, syncDelay time.Duration, observe func(time.Duration, int, error), between func()) *batcher {
	if observe == nil {
		observe = func(time.Duration, int, error) {}
	}
	if between == nil {
		between = func() {}
	}
	b := &batcher{db: db, postgres: postgres, max: max, syncDelay: syncDelay, observe: observe, between: between,
		reqs: make(chan *writeReq, max), done: make(chan struct{}), stopped: make(chan struct{}), kick: make(chan struct{}, 1)}
	go b.run()
	return b
}

// do runs fn in the next group commit and returns once that commit is
// durable.
func (b *batcher) do(ctx context.Context, fn func(*sql.Tx) error) error {
	r := &writeReq{ctx: ctx, fn: fn, err: make(chan error, 1)}
	select {
	case b.reqs <- r:
	case <-b.done:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the request's fate is decided by the committer; waiting
	// for it keeps "returned nil" equal to "committed". A request that slipped
	// in after the committer's last drain is refused.
	select {
	case err := <-r.err:
		return err
	case <-b.stopped:
		select {
		case err := <-r.err:
			return err
		default:
			return errClosed
		}
	}
}

// close stops taking writes and waits until those queued are committed and
// the last written-mode commit is durable.
func (b *batcher) close() {
	b.once.Do(func() { close(b.done) })
	<-b.stopped
}

func (b *batcher) run() {
	defer close(b.stopped)
	batch := make([]*writeReq, 0, b.max)
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	armed := false
	for {
		batch = batch[:0]
		if at := b.unsyncedSince(); !at.IsZero() && !armed {
			flush.Reset(time.Until(at.Add(b.syncDelay)))
			armed = true
		}
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.kick:
			continue // a direct commit left something unsynced: arm the timer
		case <-flush.C:
			armed = false
			b.mu.Lock()
			if !b.unsynced.IsZero() || !b.extUnsynced().IsZero() {
				b.flush()
			}
			b.mu.Unlock()
			continue
		case <-b.done:
			// Finish what was queued before the close.
			b.mu.Lock()
			defer b.mu.Unlock()
			for {
				select {
				case r := <-b.reqs:
					b.commit([]*writeReq{r})
				default:
					if !b.unsynced.IsZero() || !b.extUnsynced().IsZero() {
						b.flush()
					}
					b.final = true
					return
				}
			}
		}
	fill:
		for len(batch) < b.max {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.mu.Lock()
		b.commit(batch)
		b.mu.Unlock()
		if b.unsyncedSince().IsZero() && armed {
			flush.Stop()
			armed = false
		}
	}
}

// direct runs fn in a transaction of its own, in the caller's goroutine:
// for a caller that batches its writes itself (the audit log's committer),
// the hand-offs to and from the committer goroutine cost more than sharing
// its commits saves. It shares the connection, the sync state and the
// flush with the batched writes.
func (b *batcher) direct(ctx context.Context, fn func(*sql.Tx) error, written, kept bool) error {
	select {
	case <-b.done:
		return errClosed
	default:
	}
	r := &writeReq{ctx: ctx, fn: fn, err: make(chan error, 1), written: written || kept, kept: kept}
	b.mu.Lock()
	if b.final {
		// Closed meanwhile: nothing would flush a written commit now.
		r.written, r.kept = false, false
	}
	b.commit([]*writeReq{r})
	unsynced := !b.unsynced.IsZero()
	b.mu.Unlock()
	if unsynced {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return <-r.err
}

func (b *batcher) unsyncedSince() time.Time {
	b.mu.Lock()
	at := b.unsynced
	b.mu.Unlock()
	return earliest(at, b.extUnsynced())
}

// earliest returns the earlier of two times, the zero time meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// noteUnsynced tells the batcher of a written-mode commit made on another
// connection: it is made durable within syncDelay, as the batcher's own.
func (b *batcher) noteUnsynced() {
	b.extMu.Lock()
	b.extGen++
	if b.extSince.IsZero() {
		b.extSince = time.Now()
	}
	b.extMu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// extUnsynced is the first commit noteUnsynced told of that no durable
// commit covers yet (zero: none).
func (b *batcher) extUnsynced() time.Time {
	b.extMu.Lock()
	defer b.extMu.Unlock()
	return b.extSince
}

// extCovered is called after a durable commit that began when extGen was
// gen, read at time at: the commits told of until then are covered (a
// durable commit flushes the server's WAL up to its own record, and theirs
// were before it). One told of later may not be, but it was made after at
// (had it been made before, the durable commit would have come after it),
// so the next flush is due syncDelay after at. Keeping the older extSince
// instead made a node under steady load flush back to back, several times
// as often as syncDelay needs (TestFlushRate).
func (b *batcher) extCovered(gen uint64, at time.Time) {
	b.extMu.Lock()
	switch {
	case b.extGen == gen:
		b.extSince = time.Time{}
	case b.extSince.Before(at):
		b.extSince = at
	}
	b.extMu.Unlock()
}

// flush makes earlier written-mode commits durable with a durable commit
// of a write that changes nothing. On failure it is retried after
// syncDelay (unsynced stays set). b.mu is held.
func (b *batcher) flush() {
	if b.postgres {
		b.flushPostgres()
		return
	}
	r := &writeReq{ctx: context.Background(), err: make(chan error, 1), fn: func(tx *sql.Tx) error {
		_, err := tx.ExecContext(context.Background(), `UPDATE meta SET value = value WHERE key = 'schema_version'`)
		return err
	}}
	b.commit([]*writeReq{r})
}

// flushPostgres is flush as one statement in a transaction of its own: a
// transactional WAL message, whose commit waits for the WAL to be flushed
// up to it, and so past every commit made before it, this node's or not.
// No row: when every node's flush updated the same one they queued on its
// lock (0.4-0.6 ms a flush with 3 nodes on this machine), and in a
// cluster they would have taken turns at the disk. One statement rather
// than begin, write, commit: flushes are a fixed rate per node, so their
// statements are what grows with nodes. (An xid alone would not do: a
// commit that wrote no WAL before its commit record is asynchronous.)
func (b *batcher) flushPostgres() {
	start := time.Now()
	b.extMu.Lock()
	gen := b.extGen
	b.extMu.Unlock()
	_, err := b.db.ExecContext(context.Background(), `SELECT pg_logical_emit_message(true, 'mayfly', 'flush')`)
	if err != nil {
		err = fmt.Errorf("store: flush: %w", err)
		b.failed.Store(&err)
	} else {
		b.failed.Store(nil)
		b.unsynced = time.Time{}
		b.extCovered(gen, start)
		b.durables.Add(1)
	}
	b.observe(time.Since(start), 1, err)
	b.between()
}

// commit commits one batch; b.mu is held.
func (b *batcher) commit(batch []*writeReq) {
	start := time.Now()
	err := b.commitBatch(batch)
	if err != nil {
		b.failed.Store(&err)
	} else if b.failed.Load() != nil {
		b.failed.Store(nil)
	}
	b.observe(time.Since(start), len(batch), err)
	b.between()
}

// commitBatch runs and commits one batch; its error is the commit's, for
// metrics (each writer has already been told its own result).
func (b *batcher) commitBatch(batch []*writeReq) error {
	committed := false
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err <- err
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return nil
	}
	ctx := context.Background()
	genAt := time.Now()
	b.extMu.Lock()
	since, gen := earliest(b.unsynced, b.extSince), b.extGen
	b.extMu.Unlock()
	durable := !since.IsZero() && time.Since(since) >= b.syncDelay
	allKept := true
	for _, r := range live {
		if !r.written {
			durable = true
		}
		allKept = allKept && r.kept
	}
	if err := b.setSQLiteMode(ctx, durable); err != nil {
		failAll(live, err)
		return err
	}
	began := time.Now()
	defer func() {
		// Only a commit that happened moves the sync state; a failed one
		// changed nothing.
		if !committed {
			return
		}
		if durable {
			b.unsynced = time.Time{}
			b.extCovered(gen, genAt)
			b.durables.Add(1)
		} else if b.unsynced.IsZero() && !allKept {
			b.unsynced = began
		}
	}()
	tx, err := b.begin(ctx, durable)
	if err != nil {
		e := fmt.Errorf("store: begin: %w", err)
		failAll(live, e)
		return e
	}
	results := make([]error, len(live))
	if len(live) > 1 {
		// Optimistic pass: no savepoints (they cost two statements per
		// write). Writes rarely fail; when one does, the whole pass is
		// rolled back and redone below with a savepoint around each.
		ok := true
		for _, r := range live {
			if err := r.fn(tx); err != nil {
				ok = false
				break
			}
		}
		if ok {
			if err := tx.Commit(); err != nil {
				e := fmt.Errorf("store: commit: %w", err)
				failAll(live, e)
				return e
			}
			committed = true
			for _, r := range live {
				r.err <- nil
			}
			return nil
		}
		tx.Rollback()
		if tx, err = b.begin(ctx, durable); err != nil {
			e := fmt.Errorf("store: begin: %w", err)
			failAll(live, e)
			return e
		}
	}
	if len(live) == 1 {
		results[0] = live[0].fn(tx)
		if results[0] != nil {
			tx.Rollback()
			live[0].err <- results[0]
			return nil
		}
	} else {
		for i, r := range live {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
				tx.Rollback()
				e := fmt.Errorf("store: savepoint: %w", err)
				failAll(live, e)
				return e
			}
			results[i] = r.fn(tx)
			stmt := "RELEASE SAVEPOINT w"
			if results[i] != nil {
				stmt = "ROLLBACK TO SAVEPOINT w"
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				e := fmt.Errorf("store: savepoint: %w", err)
				failAll(live, e)
				return e
			}
			if results[i] != nil {
				// ROLLBACK TO keeps the savepoint; drop it so names don't pile up.
				if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT w"); err != nil {
					tx.Rollback()
					e := fmt.Errorf("store: savepoint: %w", err)
					failAll(live, e)
					return e
				}
			}
		}
	}
	if err := tx.Commit(); err != nil {
		e := fmt.Errorf("store: commit: %w", err)
		failAll(live, e)
		return e
	}
	committed = true
	for i, r := range live {
		r.err <- results[i]
	}
	return nil
}

// begin starts a transaction; on PostgreSQL a written-mode one does not
// wait for its WAL flush (still written to the server, so a crash of this
// process cannot lose it).
func (b *batcher) begin(ctx context.Context, durable bool) (*sql.Tx, error) {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil || durable || !b.postgres {
		return tx, err
	}
	if _, err := tx.ExecContext(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
		tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// setSQLiteMode sets the SQLite connection's synchronous level for the next
// commit: FULL (fsync of the WAL at commit) when durable, else NORMAL (the
// WAL is written, not synced). SQLite refuses the change inside a
// transaction, so it is made on the single write connection between them.
func (b *batcher) setSQLiteMode(ctx context.Context, durable bool) error {
	if b.postgres {
		return nil
	}
	want, q := modeFull, "PRAGMA synchronous = FULL"
	if !durable {
		want, q = modeNormal, "PRAGMA synchronous = NORMAL"
	}
	if b.mode == want {
		return nil
	}
	if _, err := b.db.ExecContext(ctx, q); err != nil {
		b.mode = modeUnknown
		if durable {
			return fmt.Errorf("store: setting synchronous commit: %w", err)
		}
		return nil // unknown is FULL or NORMAL: either may run a written batch
	}
	b.mode = want
	return nil
}

func failAll(batch []*writeReq, err error) {
	for _, r := range batch {
		r.err <- err
	}
}

// lastError is the last commit's error, nil when it succeeded.
func (b *batcher) lastError() error {
	if e := b.failed.Load(); e != nil {
		return *e
	}
	return nil
}
