package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// batcher is the group committer: one goroutine takes every pending write,
// runs them in one transaction and commits once, so concurrent writers share
// one durable commit (one fsync) instead of queueing for their own. A write
// that fails is isolated with savepoints so it never undoes its neighbours.
// Write functions may run twice (an optimistic pass, then an isolated one):
// they must set their results afresh on each run.
type batcher struct {
	db      *sql.DB
	observe func(time.Duration, int, error)
	between func() // runs between transactions, when the connection is free
	max     int
	reqs    chan *writeReq
	done    chan struct{}
	once    sync.Once
}

type writeReq struct {
	ctx context.Context
	fn  func(*sql.Tx) error
	err chan error
}

var errClosed = errors.New("store: closed")

func newBatcher(db *sql.DB, max int, observe func(time.Duration, int, error), between func()) *batcher {
	if observe == nil {
		observe = func(time.Duration, int, error) {}
	}
	if between == nil {
		between = func() {}
	}
	b := &batcher{db: db, max: max, observe: observe, between: between, reqs: make(chan *writeReq, max), done: make(chan struct{})}
	go b.run()
	return b
}

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
	// for it keeps "returned nil" equal to "durable".
	return <-r.err
}

func (b *batcher) close() {
	b.once.Do(func() { close(b.done) })
}

func (b *batcher) run() {
	batch := make([]*writeReq, 0, b.max)
	for {
		batch = batch[:0]
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.done:
			// Finish what was queued before the close.
			for {
				select {
				case r := <-b.reqs:
					b.commit([]*writeReq{r})
				default:
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
		b.commit(batch)
	}
}

func (b *batcher) commit(batch []*writeReq) {
	start := time.Now()
	err := b.commitBatch(batch)
	b.observe(time.Since(start), len(batch), err)
	b.between()
}

// commitBatch runs and commits one batch; its error is the commit's, for
// metrics (each writer has already been told its own result).
func (b *batcher) commitBatch(batch []*writeReq) error {
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
	tx, err := b.db.BeginTx(ctx, nil)
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
			for _, r := range live {
				r.err <- nil
			}
			return nil
		}
		tx.Rollback()
		if tx, err = b.db.BeginTx(ctx, nil); err != nil {
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
	for i, r := range live {
		r.err <- results[i]
	}
	return nil
}

func failAll(batch []*writeReq, err error) {
	for _, r := range batch {
		r.err <- err
	}
}
