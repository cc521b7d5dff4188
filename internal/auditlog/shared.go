package auditlog

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store"

	"golang.org/x/mod/sumdb/tlog"
)

// Shared mode (Options.Shared): several nodes append to one store. An
// entry is first recorded without a tree position, in the store's pending
// table (durable once that commit is); one node at a time, the sequencer
// (the holder of the store's sequencer lock), gives pending entries their
// indexes, folds them into the tree in batches and signs checkpoints. Nodes
// therefore never race for an index, and a node's appends cost one insert
// whatever the number of nodes. An append is answered once its pending
// record is committed (durable): that is what the append contract asks,
// and the index is the sequencer's to give later. No node waits for its
// entries' indexes, so no node reads the log per request: an outcome names
// its decision by pending id, and the sequencer writes the decision's
// index in when it folds the outcome. Nodes that are not the sequencer
// follow the log only every followIdle, to keep Size current. When the
// sequencer dies, its lock frees and another node takes over within
// electInterval; what it had not folded stays pending and is folded by
// the next one.

// sharedStorage is what shared mode needs from the store (*store.DB).
type sharedStorage interface {
	AddAuditPending(ctx context.Context, records [][]byte, mode store.AuditCommit) ([]int64, error)
	AuditSequenced(ctx context.Context, start int64, limit int) (idx, pids []int64, err error)
	TryAuditSequencer(ctx context.Context) (*store.AuditSequencer, error)
	Ping(ctx context.Context) error
}

const (
	// seqPoll is how often the sequencer looks for other nodes' pending
	// entries while it finds some (its own wake it, no more often than
	// that); seqIdle, how often at most while it finds none. Nobody waits
	// for an entry's index, so polls that find nothing back off: a
	// cluster's polls follow its rate, not a fixed 500 a second.
	seqPoll = 2 * time.Millisecond
	seqIdle = 50 * time.Millisecond
	// followIdle is how often a node that is not the sequencer follows
	// the log, to keep Size current: a cost per node, not per request.
	followIdle = 100 * time.Millisecond
	// electInterval is how often a node that is not the sequencer tries
	// to become it: the longest a log goes unsequenced after its
	// sequencer died.
	electInterval = 250 * time.Millisecond
	// recentPIDs bounds the sequencer's memory of the indexes it gave
	// (two maps of up to this many): enough for every request that ends
	// within some seconds of its decision at any rate this log takes.
	recentPIDs = 1 << 16
)

type sharedState struct {
	st   sharedStorage
	kick chan struct{}
	done chan struct{} // the sequencing loop exited

	leader atomic.Bool  // this node holds the sequencer lock
	pid    atomic.Int64 // the session holding it, while this node does

	// owned by the sequencing loop
	seq *store.AuditSequencer
	// The indexes of the pending records this node sequenced last
	// (recent, then older): where the decisions of outcomes are found.
	recent, older map[int64]int64
	lastElect     time.Time
	lastSeen      time.Time // last follow
}

// commitPending records batch in the pending table in one transaction and
// answers each request's done once it is committed (Index -1, with the
// entry's pending id): durable, or written for a batch of written
// entries, as a single node's commit is.
func (l *Log) commitPending(batch []*request) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	ts := audit.FormatTime(l.opts.Now())
	records := make([][]byte, len(batch))
	for i, r := range batch {
		rec := make([]byte, 0, len(ts)+1+len(r.body)+40)
		rec = append(rec, ts...)
		if r.ref > 0 {
			// An outcome: "TIME REF FROM\n", see sequence.
			rec = append(strconv.AppendInt(append(rec, ' '), r.ref, 10), ' ')
			rec = strconv.AppendInt(rec, r.refFrom, 10)
		}
		records[i] = append(append(rec, '\n'), r.body...)
	}
	sh := l.sh
	mode := store.AuditDurable
	if allWritten(batch) {
		mode = store.AuditWritten
	}
	ids, err := sh.st.AddAuditPending(ctx, records, mode)
	if err != nil {
		l.failBatch(batch, err)
		return
	}
	l.mu.Lock()
	l.commitErr = nil
	l.mu.Unlock()
	l.metrics.appends.Add(float64(len(batch)))
	l.metrics.batchSize.Observe(float64(len(batch)))
	l.metrics.commitSecs.Observe(time.Since(began).Seconds())
	for i, r := range batch {
		r.done <- result{Index: -1, pid: ids[i]}
	}
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// failBatch answers every request of batch with err, wrapped in
// failclosed.ErrUnavailable, and marks the log unhealthy.
func (l *Log) failBatch(batch []*request, err error) {
	err = fmt.Errorf("audit log %w: appending %d entries: %v", failclosed.ErrUnavailable, len(batch), err)
	l.mu.Lock()
	l.commitErr = err
	l.mu.Unlock()
	l.metrics.appendErrors.Add(float64(len(batch)))
	for _, r := range batch {
		r.done <- result{Index: -1, Err: err}
	}
}

// seqLoop sequences pending entries while this node holds the sequencer
// lock, tries to take it when it does not, and follows the log. It exits
// once the committer has (Close), after a last round.
func (l *Log) seqLoop() {
	sh := l.sh
	defer close(sh.done)
	wait := seqPoll
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-sh.kick:
		case <-t.C:
		case <-l.done:
			// Everything this node recorded is pending: sequence it if no
			// other node does (a lone node, an offline command), else
			// leave it to the sequencer.
			l.seqRound(true)
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
			// sequencer.
			return
		}
		began := time.Now()
		if l.seqRound(false) {
			wait = seqPoll
		} else {
			wait = min(2*wait, seqIdle)
		}
		t.Reset(wait)
		// Rounds no closer than seqPoll: kicks in between share the next.
		time.Sleep(seqPoll - time.Since(began))
	}
}

// seqRound is one turn of the sequencing loop; final: the last, at Close.
// It reports whether it sequenced entries.
func (l *Log) seqRound(final bool) bool {
	sh := l.sh
	now := time.Now()
	if sh.seq == nil && (final || now.Sub(sh.lastElect) >= electInterval) {
		sh.lastElect = now
		l.elect()
	}
	if sh.seq != nil {
		n, err := l.sequence()
		if err != nil {
			// Give up the lock: another node, or this one at its next
			// election, goes on from what the store holds.
			_ = sh.seq.Close()
			sh.seq = nil
			sh.leader.Store(false)
			sh.pid.Store(0)
			sh.lastElect = time.Time{}
		}
		return n > 0
	}
	if final || now.Sub(sh.lastSeen) >= followIdle {
		sh.lastSeen = now
		_ = l.follow() // retried at the next round
	}
	return false
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
}

// sequence folds pending entries into the tree until none is left, and
// returns how many it folded.
func (l *Log) sequence() (folded int, err error) {
	sh := l.sh
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	for {
		began := time.Now()
		ids, recs, err := sh.seq.Pending(ctx, l.opts.MaxBatch)
		if err != nil || len(ids) == 0 {
			return folded, err
		}
		start := l.Size()
		refs, err := l.decisionIndexes(ctx, start, ids, recs)
		if err != nil {
			return folded, err
		}
		entries := make([][]byte, len(recs))
		for i, rec := range recs {
			ts, ref, _, body, ok := parsePending(rec)
			if !ok {
				return folded, fmt.Errorf("audit: pending record %d is malformed", ids[i])
			}
			if ref > 0 {
				idx, found := refs[ref]
				if !found {
					// Cannot happen (a decision is recorded before its
					// outcome and never removed); the outcome is not
					// held back for it.
					idx = -1
				}
				cut := len(body) - len("-1}}")
				body = append(strconv.AppendInt(append(make([]byte, 0, len(body)+20), body[:cut]...), idx, 10), "}}"...)
			}
			entries[i] = audit.AppendEntry(nil, start+int64(i), ts, body)
		}
		end := start + int64(len(entries))
		hashes, root, err := l.hashQueue(start, end, entries)
		if err != nil {
			return folded, err
		}
		if err := sh.seq.Sequence(ctx, start, entries, ids, tlog.StoredHashCount(start), hashesOf(hashes)); err != nil {
			if isConflict(err) {
				l.metrics.conflicts.Inc()
			}
			return folded, err
		}
		l.advance(start, end, hashes)
		l.mu.Lock()
		l.size, l.root = end, root
		l.mu.Unlock()
		l.metrics.size.Set(float64(end))
		l.metrics.seqSecs.Observe(time.Since(began).Seconds())
		for i, id := range ids {
			sh.recent[id] = start + int64(i)
		}
		if len(sh.recent) >= recentPIDs {
			sh.older, sh.recent = sh.recent, make(map[int64]int64, recentPIDs)
		}
		folded += len(ids)
		if len(ids) < l.opts.MaxBatch {
			return folded, nil
		}
	}
}

// follow reads how far the sequencer has come, for Size: one read of the
// log's size.
func (l *Log) follow() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	size, err := l.st.AuditSize(ctx)
	if err != nil {
		return err
	}
	if !l.sh.leader.Load() {
		l.mu.Lock()
		if size > l.size {
			l.size = size // the root is the sequencer's to know
		}
		l.mu.Unlock()
		l.metrics.size.Set(float64(size))
	}
	return nil
}

// parsePending splits a pending record, "TIME\nBODY" or, for an outcome
// whose decision's index the sequencer writes in, "TIME REF FROM\nBODY"
// (REF the decision's pending id, FROM a size of the log before it was
// recorded, BODY ending in outcomeIndexSuffix).
func parsePending(rec []byte) (ts string, ref, from int64, body []byte, ok bool) {
	nl := bytes.IndexByte(rec, '\n')
	if nl <= 0 || nl+1 >= len(rec) || rec[nl+1] != '{' {
		return "", 0, 0, nil, false
	}
	head, body := string(rec[:nl]), rec[nl+1:]
	sp := strings.IndexByte(head, ' ')
	if sp < 0 {
		return head, 0, 0, body, true
	}
	f := strings.Fields(head[sp+1:])
	if len(f) != 2 || !bytes.HasSuffix(body, []byte(outcomeIndexSuffix)) {
		return "", 0, 0, nil, false
	}
	ref, err1 := strconv.ParseInt(f[0], 10, 64)
	from, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || ref <= 0 || from < 0 {
		return "", 0, 0, nil, false
	}
	return head[:sp], ref, from, body, true
}

// decisionIndexes finds the index of the decision of every outcome among
// recs (pending records ids, to be sequenced from start): in the batch
// itself, in what this sequencer gave lately, or else in the log from the
// size the outcome's node saw before the decision was recorded (after a
// fail-over, or for a request that ran long).
func (l *Log) decisionIndexes(ctx context.Context, start int64, ids []int64, recs [][]byte) (map[int64]int64, error) {
	sh := l.sh
	var out map[int64]int64
	var missing map[int64]bool
	from := int64(-1)
	for _, rec := range recs {
		_, ref, refFrom, _, ok := parsePending(rec)
		if !ok || ref <= 0 {
			continue
		}
		if out == nil {
			out = map[int64]int64{}
			for j, id := range ids {
				out[id] = start + int64(j)
			}
		}
		if _, ok := out[ref]; ok {
			continue
		}
		if idx, ok := sh.recent[ref]; ok {
			out[ref] = idx
		} else if idx, ok := sh.older[ref]; ok {
			out[ref] = idx
		} else {
			if missing == nil {
				missing = map[int64]bool{}
			}
			missing[ref] = true
			if from < 0 || refFrom < from {
				from = refFrom
			}
		}
	}
	for from >= 0 && len(missing) > 0 && from < start {
		idx, pids, err := sh.st.AuditSequenced(ctx, from, 10000)
		if err != nil {
			return nil, err
		}
		if len(idx) == 0 {
			break
		}
		for k, pid := range pids {
			if missing[pid] {
				out[pid] = idx[k]
				delete(missing, pid)
			}
		}
		from = idx[len(idx)-1] + 1
	}
	return out, nil
}
