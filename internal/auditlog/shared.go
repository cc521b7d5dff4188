package auditlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
// index in when it folds the outcome. A forwarded request still gets one
// entry, as with the journal (SPEC: one entry per gateway request): its
// decision is recorded as an intent, which the sequencer holds (up to
// intentHold) until the request's completion is pending too, and folds
// the two into the one entry of the whole request; a decision held longer
// (a long request, a node that died) becomes an entry of its own, and the
// completion then an outcome entry naming it. Nodes that are not the sequencer
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
	// cluster's polls follow its rate, not a fixed 500 a second. A round
	// costs a read and a fold (their round trips, a transaction, the
	// node's and PostgreSQL's CPU) whatever it carries: at 2 ms apart a
	// busy cluster's rounds were most of its statements per gateway call,
	// and more per call the fewer calls its nodes served. 10 ms makes
	// each carry five times as much; an entry is in the log within
	// milliseconds still, well within a checkpoint interval.
	seqPoll = 10 * time.Millisecond
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
	// intentHold is how long the sequencer holds a forwarded request's
	// decision for its completion (Options.intentHold in tests): longer
	// than nearly every API call takes, short enough that a decision
	// whose request never completes (its node died) is in the log soon.
	intentHold = time.Second
	// lateCommit is how far behind its reads the sequencer's read floor
	// trails (readFloor), and rescan how often it reads from the start
	// all the same.
	lateCommit = 100 * time.Millisecond
	rescan     = time.Second
	// maxHeld bounds the decisions held at once: each read of the pending
	// records skips them by id, a cost per record read that grows with
	// their number. Past it the oldest get entries of their own (at ~1,000
	// requests in flight across the cluster, say 10,000 a second of
	// 100 ms each).
	maxHeld = 1024
)

// heldIntent is a decision the sequencer holds for its completion.
type heldIntent struct {
	ts    string
	body  []byte
	since time.Time
}

type sharedState struct {
	st   sharedStorage
	kick chan struct{}
	done chan struct{} // the sequencing loop exited

	leader atomic.Bool  // this node holds the sequencer lock
	pid    atomic.Int64 // the session holding it, while this node does

	// owned by the sequencing loop
	seq *store.AuditSequencer
	// The decisions held for their completions, by pending id: only
	// while this node sequences (after a fail-over the next sequencer
	// reads them anew, as they are still pending).
	held map[int64]*heldIntent
	// The indexes of the pending records this node sequenced last
	// (recent, then older): where the decisions of outcomes are found.
	recent, older map[int64]int64
	lastElect     time.Time
	lastSeen      time.Time // last follow
	floor         readFloor
	lastRescan    time.Time
}

// readFloor is where the sequencer's reads of pending records start. Every
// pending record is deleted once sequenced, and PostgreSQL leaves the
// deleted records' index entries in place until a vacuum (autovacuum wakes
// once a minute: 600,000 of them at 10,000 requests a second), so a read
// from the lowest id walked them all, ~300 µs per 100,000, and the
// sequencer reads up to 500 times a second. A read that starts above
// what earlier reads saw must not miss a record committed after them with
// a lower id (ids are taken before commit, from one sequence for all
// nodes): the floor is the highest id read at least lateCommit ago, so a
// record is missed only if its insert took longer than that to commit, and
// a read from the start every rescan finds those. A record is never lost;
// such a late one is only sequenced up to rescan later, and a completion
// read before its late decision makes that read start from the start.
type readFloor struct {
	marks []floorMark // reads that raised the highest id, oldest first
	top   int64       // the highest id read
	at    int64       // the floor
}

type floorMark struct {
	t   time.Time
	top int64
}

// read notes a read begun at t whose highest id was top (0: none).
func (f *readFloor) read(t time.Time, top int64) {
	if top > f.top {
		f.top = top
		f.marks = append(f.marks, floorMark{t, top})
	}
}

// get returns the floor at now.
func (f *readFloor) get(now time.Time) int64 {
	n := 0
	for n < len(f.marks) && now.Sub(f.marks[n].t) >= lateCommit {
		f.at = f.marks[n].top
		n++
	}
	f.marks = f.marks[:copy(f.marks, f.marks[n:])]
	return f.at
}

// commitPending records batch in the pending table in one transaction and
// answers each request's done once it is committed (Index -1, with the
// entry's pending id): durable, or written for a batch of written
// entries, as a single node's commit is.
func (l *Log) commitPending(batch []*request) {
	l.mu.Lock()
	treeErr := l.treeErr
	l.mu.Unlock()
	if treeErr != nil {
		// No node can sign over the stored tree (see reload): refuse
		// what would wait for it.
		l.failBatch(batch, treeErr)
		return
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	ts := audit.FormatTime(l.opts.Now())
	records := make([][]byte, len(batch))
	for i, r := range batch {
		rec := make([]byte, sealLen, sealLen+len(ts)+1+len(r.body)+40)
		rec = append(rec, ts...)
		switch {
		case r.intent:
			rec = append(rec, " intent"...) // see parsePending
		case r.ref > 0:
			rec = append(strconv.AppendInt(append(rec, ' '), r.ref, 10), ' ')
			rec = append(append(strconv.AppendInt(rec, r.refFrom, 10), ' '), r.outcome...)
		}
		records[i] = l.pmac.seal(append(append(rec, '\n'), r.body...))
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
	sh.wake()
}

// wake starts the sequencing loop's next round early, on the sequencer:
// it has the node's new records to fold. Another node's loop only checks
// whether an election or a size read is due, which its timer does:
// woken per commit, it took a round (and a sleep) per commit for nothing.
func (sh *sharedState) wake() {
	if !sh.leader.Load() {
		return
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
		if l.opts.seqRound != nil {
			l.opts.seqRound(l, began)
		}
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
		n, err := l.sequence(final)
		if err != nil {
			// Give up the lock: another node, or this one at its next
			// election, goes on from what the store holds (held
			// decisions included: they are pending still).
			_ = sh.seq.Close()
			sh.seq = nil
			sh.held = nil
			sh.leader.Store(false)
			sh.pid.Store(0)
			sh.lastElect = time.Time{}
		}
		// Poll at full rate while decisions wait for completions that
		// another node may record.
		return n > 0 || len(sh.held) > 0
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
	sh.held = map[int64]*heldIntent{}
	sh.floor, sh.lastRescan = readFloor{}, time.Time{}
	sh.pid.Store(seq.SessionPID())
	sh.leader.Store(true)
}

// foldSrc is what one entry of a fold is made from: a pending record
// (pid), parsed.
type foldSrc struct {
	pid int64
	rec pendingRec
}

// sequence folds pending entries into the tree until none is left but
// held decisions, and returns how many pending records it folded. final
// (the last round, at Close): nothing is held, every decision gets an
// entry now.
func (l *Log) sequence(final bool) (folded int, err error) {
	sh := l.sh
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	now := time.Now()
	after := sh.floor.get(now)
	if final || now.Sub(sh.lastRescan) >= rescan {
		after, sh.lastRescan = 0, now
	}
	for {
		began := time.Now()
		skip := make([]int64, 0, len(sh.held))
		for id := range sh.held {
			if id > after {
				skip = append(skip, id)
			}
		}
		ids, recs, err := sh.seq.Pending(ctx, after, l.opts.MaxBatch, skip)
		if err != nil {
			return folded, err
		}
		parsed := make([]pendingRec, len(recs))
		for i, raw := range recs {
			parsed[i] = l.openPending(ids[i], raw)
		}
		if after > 0 && sh.belowFloor(after, parsed) {
			// A completion whose decision may be pending below the
			// floor (its insert committed late): read from the start, so
			// that the two are folded as one.
			after, sh.lastRescan = 0, time.Now()
			continue
		}
		if len(ids) > 0 {
			sh.floor.read(began, ids[len(ids)-1])
		}
		srcs := make([]foldSrc, 0, len(recs))
		var merged []int64 // held decisions folded into their completions
		for i, p := range parsed {
			switch {
			case p.intent && !final:
				sh.held[ids[i]] = &heldIntent{ts: p.ts, body: p.body, since: began}
				continue
			case p.outcome != "" && sh.held[p.ref] != nil:
				// The whole request, decision and outcome: one entry.
				delete(sh.held, p.ref)
				merged = append(merged, p.ref)
				p = pendingRec{ts: p.ts, body: p.body}
			}
			srcs = append(srcs, foldSrc{pid: ids[i], rec: p})
		}
		srcs = l.release(srcs, began, final)
		if len(srcs) > 0 {
			if err := l.foldPending(ctx, srcs, merged, began); err != nil {
				return folded, err
			}
			folded += len(srcs) + len(merged)
		}
		if len(ids) < l.opts.MaxBatch {
			return folded, nil
		}
	}
}

// belowFloor reports whether a record read from after is the completion
// or outcome of a decision at or below after that this sequencer neither
// holds nor sequenced lately: one it may not have read (or one another
// sequencer placed, which one read from the start rules out).
func (sh *sharedState) belowFloor(after int64, parsed []pendingRec) bool {
	for _, p := range parsed {
		if p.ref <= 0 || p.ref > after || sh.held[p.ref] != nil {
			continue
		}
		_, recent := sh.recent[p.ref]
		_, older := sh.older[p.ref]
		if !recent && !older {
			return true
		}
	}
	return false
}

// release adds to srcs the held decisions due an entry of their own:
// every one at the final round, those held intentHold or longer, and the
// oldest past maxHeld. Their completions, when they come, are outcome
// entries naming them.
func (l *Log) release(srcs []foldSrc, now time.Time, final bool) []foldSrc {
	sh := l.sh
	hold := l.opts.intentHold
	if hold <= 0 {
		hold = intentHold
	}
	due := 0
	for _, h := range sh.held {
		if final || now.Sub(h.since) >= hold {
			due++
		}
	}
	if due == 0 && len(sh.held) <= maxHeld {
		return srcs
	}
	ids := make([]int64, 0, len(sh.held))
	for id := range sh.held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	left := len(ids)
	for _, id := range ids {
		h := sh.held[id]
		if final || now.Sub(h.since) >= hold || left > maxHeld {
			srcs = append(srcs, foldSrc{pid: id, rec: pendingRec{ts: h.ts, body: h.body}})
			delete(sh.held, id)
			left--
		}
	}
	return srcs
}

// foldPending makes srcs the entries at the log's end, merged decisions' records
// deleted with them, in one store transaction, and advances the tree.
func (l *Log) foldPending(ctx context.Context, srcs []foldSrc, merged []int64, began time.Time) error {
	sh := l.sh
	start := l.Size()
	refs, err := l.decisionIndexes(ctx, start, srcs)
	if err != nil {
		return err
	}
	entries := make([][]byte, len(srcs))
	pids := make([]int64, len(srcs))
	for i, src := range srcs {
		body := src.rec.body
		if src.rec.ref > 0 {
			idx, found := refs[src.rec.ref]
			if !found {
				// Cannot happen: a decision commits before its outcome
				// is recorded and is never removed, and an outcome read
				// above the floor before its decision makes the read
				// start from the start (belowFloor). The outcome is not
				// held back for it.
				idx = -1
			}
			if body, err = outcomeBody(src.rec, idx); err != nil {
				return fmt.Errorf("audit: pending record %d: %w", src.pid, err)
			}
		}
		entries[i] = audit.AppendEntry(nil, start+int64(i), src.rec.ts, body)
		pids[i] = src.pid
	}
	end := start + int64(len(entries))
	hashes, root, err := l.hashQueue(start, end, entries)
	if err != nil {
		return err
	}
	if err := sh.seq.Sequence(ctx, start, entries, pids, merged, tlog.StoredHashCount(start), hashesOf(hashes)); err != nil {
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
	for i, id := range pids {
		sh.recent[id] = start + int64(i)
	}
	if len(sh.recent) >= recentPIDs {
		sh.older, sh.recent = sh.recent, make(map[int64]int64, recentPIDs)
	}
	return nil
}

// outcomeBody is the body of the outcome entry of rec, a completion (or
// an outcome an older mayfly recorded) whose decision has an entry of its
// own at index decision.
func outcomeBody(rec pendingRec, decision int64) ([]byte, error) {
	if rec.outcome == "" {
		// Recorded as Outcome(…, -1): write the index in.
		cut := len(rec.body) - len("-1}}")
		return append(strconv.AppendInt(append(make([]byte, 0, len(rec.body)+20), rec.body[:cut]...), decision, 10), "}}"...), nil
	}
	var whole audit.Event
	if err := json.Unmarshal(rec.body, &whole); err != nil {
		return nil, fmt.Errorf("a completion's request: %w", err)
	}
	return encodeEvent(audit.Outcome(whole, rec.outcome, decision))
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

// pendingRec is a pending record, parsed (parsePending).
type pendingRec struct {
	ts   string
	body []byte
	// intent: a forwarded request's decision, whose completion may follow.
	intent bool
	// An outcome or a completion: its decision's pending id, and a size
	// of the log read before the decision was recorded.
	ref, from int64
	// A completion: body is the whole request, decision and outcome; this
	// is the type of the outcome entry made of it should the decision have
	// an entry of its own. Empty for an outcome an older mayfly recorded.
	outcome string
}

// parsePending splits a pending record, "TIME\nBODY" or, with more in its
// first line:
//   - "TIME intent\nBODY": a forwarded request's decision;
//   - "TIME REF FROM TYPE\nBODY": the completion of the decision REF (its
//     pending id; FROM a size of the log before it was recorded), BODY the
//     whole request, and TYPE its outcome entry's type;
//   - "TIME REF FROM\nBODY": an outcome as an older mayfly recorded it,
//     BODY ending in outcomeIndexSuffix, whose index the sequencer writes in.
func parsePending(rec []byte) (p pendingRec, ok bool) {
	nl := bytes.IndexByte(rec, '\n')
	if nl <= 0 || nl+1 >= len(rec) || rec[nl+1] != '{' {
		return pendingRec{}, false
	}
	head, body := string(rec[:nl]), rec[nl+1:]
	sp := strings.IndexByte(head, ' ')
	if sp < 0 {
		return pendingRec{ts: head, body: body}, true
	}
	p = pendingRec{ts: head[:sp], body: body}
	f := strings.Fields(head[sp+1:])
	switch {
	case len(f) == 1 && f[0] == "intent":
		p.intent = true
		return p, true
	case len(f) == 3 && f[2] != "":
		p.outcome = f[2]
	case len(f) == 2 && bytes.HasSuffix(body, []byte(outcomeIndexSuffix)):
	default:
		return pendingRec{}, false
	}
	ref, err1 := strconv.ParseInt(f[0], 10, 64)
	from, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || ref <= 0 || from < 0 {
		return pendingRec{}, false
	}
	p.ref, p.from = ref, from
	return p, true
}

// decisionIndexes finds the index of the decision of every outcome among
// srcs (to be sequenced from start): in the batch itself, in what this
// sequencer gave lately, or else in the log from the size the outcome's
// node saw before the decision was recorded (after a fail-over, or for a
// request that ran long).
func (l *Log) decisionIndexes(ctx context.Context, start int64, srcs []foldSrc) (map[int64]int64, error) {
	sh := l.sh
	var out map[int64]int64
	var missing map[int64]bool
	from := int64(-1)
	for _, src := range srcs {
		ref, refFrom := src.rec.ref, src.rec.from
		if ref <= 0 {
			continue
		}
		if out == nil {
			out = map[int64]int64{}
			for j, s := range srcs {
				out[s.pid] = start + int64(j)
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
