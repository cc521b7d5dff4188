package audit

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// Shared mode (Options.Shared): several nodes append to one store. An
// entry is first recorded without a tree position, in the store's pending
// table (durable once that commit is); one node at a time, the sequencer
// (the holder of the store's sequencer lock), gives pending entries their
// indexes, folds them into the tree in batches and signs checkpoints. Nodes
// therefore never race for an index, and a node's appends cost one insert
// whatever the number of nodes. Every node follows the log to learn the
// indexes its entries got. When the sequencer dies, its lock frees and
// another node takes over within electInterval; what it had not folded
// stays pending and is folded by the next one.

// sharedStorage is what shared mode needs from the store (*store.DB).
type sharedStorage interface {
	AddAuditPending(ctx context.Context, records [][]byte, written bool) ([]int64, error)
	AuditSequenced(ctx context.Context, start int64, limit int) (idx, pids []int64, err error)
	TryAuditSequencer(ctx context.Context) (*store.AuditSequencer, error)
	Ping(ctx context.Context) error
}

const (
	// seqPoll is how often the sequencer looks for other nodes' pending
	// entries (its own wake it at once), and a node with entries waiting
	// for their index follows the log.
	seqPoll = 2 * time.Millisecond
	// followIdle is how often a node without waiting entries follows the
	// log, to keep Size current.
	followIdle = 100 * time.Millisecond
	// electInterval is how often a node that is not the sequencer tries
	// to become it: the longest a log goes unsequenced after its
	// sequencer died.
	electInterval = 250 * time.Millisecond
	// closeWait bounds how long Close waits for the indexes of this
	// node's entries.
	closeWait = time.Second
)

type sharedState struct {
	st   sharedStorage
	kick chan struct{}
	done chan struct{} // the sequencing loop exited

	// mu is held by the committer from recording entries until it has
	// registered them in waiting, and by whoever resolves them, so that
	// an entry sequenced before it is registered is still resolved.
	mu      sync.Mutex
	waiting map[int64]chan Result // pending id -> its request's index

	leader atomic.Bool  // this node holds the sequencer lock
	pid    atomic.Int64 // the session holding it, while this node does

	// owned by the sequencing loop
	seq       *store.AuditSequencer
	lastElect time.Time
	lastSeen  time.Time // last follow
}

// commitPending records batch in the pending table in one transaction and
// answers each request's done (Index -1); each request's seq is answered
// once the entry has its index.
func (l *Log) commitPending(batch []*request) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	ts := l.opts.Now().UTC().Format(timeLayout)
	records := make([][]byte, len(batch))
	for i, r := range batch {
		rec := make([]byte, 0, len(ts)+1+len(r.body))
		records[i] = append(append(append(rec, ts...), '\n'), r.body...)
	}
	sh := l.sh
	sh.mu.Lock()
	ids, err := sh.st.AddAuditPending(ctx, records, allWritten(batch))
	if err != nil {
		sh.mu.Unlock()
		l.failBatch(batch, err)
		return
	}
	for i, r := range batch {
		sh.waiting[ids[i]] = r.seq
	}
	sh.mu.Unlock()
	l.mu.Lock()
	l.commitErr = nil
	l.mu.Unlock()
	l.metrics.appends.Add(float64(len(batch)))
	l.metrics.batchSize.Observe(float64(len(batch)))
	l.metrics.commitSecs.Observe(time.Since(began).Seconds())
	for _, r := range batch {
		r.done <- Result{Index: -1}
	}
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// failBatch answers every request of batch with err, wrapped in
// ErrUnavailable, and marks the log unhealthy.
func (l *Log) failBatch(batch []*request, err error) {
	err = fmt.Errorf("%w: appending %d entries: %v", ErrUnavailable, len(batch), err)
	l.mu.Lock()
	l.commitErr = err
	l.mu.Unlock()
	l.metrics.appendErrors.Add(float64(len(batch)))
	for _, r := range batch {
		r.done <- Result{Index: -1, Err: err}
		if r.seq != nil {
			r.seq <- Result{Index: -1, Err: err}
		}
	}
}

// seqLoop sequences pending entries while this node holds the sequencer
// lock, tries to take it when it does not, and follows the log. It exits
// once the committer has (Close), after a last round.
func (l *Log) seqLoop() {
	sh := l.sh
	defer close(sh.done)
	t := time.NewTicker(seqPoll)
	defer t.Stop()
	for {
		select {
		case <-sh.kick:
		case <-t.C:
		case <-l.done:
			// Everything this node recorded is pending: wait a little for
			// its indexes, sequencing them itself if no node does.
			for deadline := time.Now().Add(closeWait); ; time.Sleep(seqPoll) {
				l.seqRound(true)
				sh.mu.Lock()
				n := len(sh.waiting)
				sh.mu.Unlock()
				if n == 0 || time.Now().After(deadline) {
					break
				}
			}
			if sh.seq != nil {
				// The last checkpoint this sequencer can sign.
				ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
				_ = l.publish(ctx)
				cancel()
				_ = sh.seq.Close()
				sh.seq = nil
				sh.leader.Store(false)
				sh.pid.Store(0)
			}
			// What was not sequenced stays pending for the next
			// sequencer; its appenders learn no index from this node.
			sh.mu.Lock()
			for id, ch := range sh.waiting {
				ch <- Result{Index: -1, Err: fmt.Errorf("audit: closed before entry %d was sequenced (it is recorded, pending): %w", id, ErrClosed)}
				delete(sh.waiting, id)
			}
			sh.mu.Unlock()
			return
		}
		l.seqRound(false)
	}
}

// seqRound is one turn of the sequencing loop; final: the last, at Close.
func (l *Log) seqRound(final bool) {
	sh := l.sh
	now := time.Now()
	if sh.seq == nil && (final || now.Sub(sh.lastElect) >= electInterval) {
		sh.lastElect = now
		l.elect()
	}
	if sh.seq != nil {
		if err := l.sequence(); err != nil {
			// Give up the lock: another node, or this one at its next
			// election, goes on from what the store holds.
			_ = sh.seq.Close()
			sh.seq = nil
			sh.leader.Store(false)
			sh.pid.Store(0)
			sh.lastElect = time.Time{}
		}
		return
	}
	sh.mu.Lock()
	waiting := len(sh.waiting) > 0
	sh.mu.Unlock()
	if waiting || final || now.Sub(sh.lastSeen) >= followIdle {
		sh.lastSeen = now
		_ = l.follow() // retried at the next round
	}
}

// elect tries to take the sequencer lock, and on success loads the tree's
// state as the last sequencer left it.
func (l *Log) elect() {
	sh := l.sh
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	seq, err := sh.st.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		return
	}
	if err := l.reload(ctx); err != nil {
		_ = seq.Close()
		return
	}
	sh.seq = seq
	sh.pid.Store(seq.SessionPID())
	sh.leader.Store(true)
	l.resolveUpTo(ctx)
}

// sequence folds pending entries into the tree until none is left.
func (l *Log) sequence() error {
	sh := l.sh
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	for {
		began := time.Now()
		ids, recs, err := sh.seq.Pending(ctx, l.opts.MaxBatch)
		if err != nil || len(ids) == 0 {
			return err
		}
		start := l.Size()
		entries := make([][]byte, len(recs))
		for i, rec := range recs {
			nl := bytes.IndexByte(rec, '\n')
			if nl <= 0 || nl+1 >= len(rec) || rec[nl+1] != '{' {
				return fmt.Errorf("audit: pending record %d is malformed", ids[i])
			}
			entries[i] = buildEntry(nil, start+int64(i), string(rec[:nl]), rec[nl+1:])
		}
		end := start + int64(len(entries))
		hashes, root, err := l.hashQueue(start, end, entries)
		if err != nil {
			return err
		}
		if err := sh.seq.Sequence(ctx, start, entries, ids, tlog.StoredHashCount(start), hashesOf(hashes)); err != nil {
			if isConflict(err) {
				l.metrics.conflicts.Inc()
			}
			return err
		}
		l.advance(start, end, hashes)
		l.mu.Lock()
		l.size, l.root = end, root
		l.mu.Unlock()
		l.metrics.size.Set(float64(end))
		l.metrics.seqSecs.Observe(time.Since(began).Seconds())
		l.followed = end
		sh.mu.Lock()
		for i, id := range ids {
			if ch, ok := sh.waiting[id]; ok {
				ch <- Result{Index: start + int64(i)}
				delete(sh.waiting, id)
			}
		}
		sh.mu.Unlock()
		if len(ids) < l.opts.MaxBatch {
			return nil
		}
	}
}

// follow reads what the sequencer added since this node's size and
// answers the entries of this node it finds.
func (l *Log) follow() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	return l.resolveFrom(ctx, l.followed)
}

// resolveUpTo answers waiting entries the store already sequenced (a new
// sequencer's predecessor may have folded them).
func (l *Log) resolveUpTo(ctx context.Context) {
	sh := l.sh
	sh.mu.Lock()
	n := len(sh.waiting)
	sh.mu.Unlock()
	if n == 0 {
		return
	}
	// Entries this node waits for were recorded after it last followed.
	_ = l.resolveFrom(ctx, max(0, l.followed))
}

func (l *Log) resolveFrom(ctx context.Context, from int64) error {
	sh := l.sh
	for {
		idx, pids, err := sh.st.AuditSequenced(ctx, from, 10000)
		if err != nil {
			return err
		}
		if len(idx) == 0 {
			return nil
		}
		sh.mu.Lock()
		for i, id := range pids {
			if ch, ok := sh.waiting[id]; ok && id >= 0 {
				ch <- Result{Index: idx[i]}
				delete(sh.waiting, id)
			}
		}
		sh.mu.Unlock()
		from = idx[len(idx)-1] + 1
		l.followed = from
		if !sh.leader.Load() {
			l.mu.Lock()
			if from > l.size {
				l.size = from // the root is the sequencer's to know
			}
			l.mu.Unlock()
			l.metrics.size.Set(float64(from))
		}
		if len(idx) < 10000 {
			return nil
		}
	}
}
