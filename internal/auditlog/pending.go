package auditlog

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
)

// An action's entry is written by the action itself: Record encodes it as
// a pending record, the action's own store transaction writes that record
// (store.Note), and the log gives it its index as it does any pending
// record: in shared mode the sequencer does, on a node with its store to
// itself the committer (the journal loop with a journal) does, and a
// caller learns the index from the entry's Future (Recorded). The action
// and its entry therefore
// commit together or not at all: no action stands without its entry, and no
// caller is told "nothing was done" of an action that was.

// Record encodes ev as the pending record that the action it records
// writes in its own store transaction (store.Note); the entry's time is
// now. It fails once the log is closed. Read Size before the action and
// pass it to Recorded.
func (l *Log) Record(ev audit.Event) ([]byte, error) {
	l.closeMu.RLock()
	closed := l.closed
	l.closeMu.RUnlock()
	if closed {
		return nil, fmt.Errorf("audit: recording %s entry: %w", ev.Type, ErrClosed)
	}
	body, err := encodeEvent(ev)
	if err != nil {
		return nil, err
	}
	ts := audit.FormatTime(l.opts.Now())
	rec := make([]byte, sealLen, sealLen+len(ts)+1+len(body))
	return l.pmac.seal(append(append(append(rec, ts...), '\n'), body...)), nil
}

// Pending records are authenticated: "m1 MAC\nHEAD\nBODY", MAC the
// HMAC-SHA256 of "HEAD\nBODY" (time, shared mode's fields, body) under a
// key every node derives from the audit signer key, which all nodes of a
// cluster share. The database is not trusted with the log's contents: a
// row someone inserts into audit_pending by SQL is not a node's, and is
// never signed into the log as an entry (see rejectedEntry).
const (
	sealPrefix = "m1 "
	sealLen    = len(sealPrefix) + 43 + 1 // base64 (unpadded) of 32 bytes, "\n"
	// pendingMACInfo names the key's use (HKDF info): the signer key
	// signs checkpoints, this one only authenticates pending records.
	pendingMACInfo = "mayfly audit pending record MAC v1"
)

// pendingMAC seals and opens pending records.
type pendingMAC struct{ key []byte }

func newPendingMAC(signerKey string) (pendingMAC, error) {
	k, err := hkdf.Key(sha256.New, []byte(signerKey), nil, pendingMACInfo, 32)
	if err != nil {
		return pendingMAC{}, fmt.Errorf("audit: deriving the pending record key: %w", err)
	}
	return pendingMAC{key: k}, nil
}

// seal writes into rec's first sealLen bytes, which its maker left for
// them, the MAC of the rest.
func (m pendingMAC) seal(rec []byte) []byte {
	h := hmac.New(sha256.New, m.key)
	h.Write(rec[sealLen:])
	var sum [sha256.Size]byte
	copy(rec, sealPrefix)
	base64.RawStdEncoding.Encode(rec[len(sealPrefix):], h.Sum(sum[:0]))
	rec[sealLen-1] = '\n'
	return rec
}

// open returns the record raw seals, if its MAC is right (compared in
// constant time).
func (m pendingMAC) open(raw []byte) ([]byte, bool) {
	if len(raw) < sealLen || string(raw[:len(sealPrefix)]) != sealPrefix || raw[sealLen-1] != '\n' {
		return nil, false
	}
	var got [sha256.Size]byte
	if n, err := base64.RawStdEncoding.Decode(got[:], raw[len(sealPrefix):sealLen-1]); err != nil || n != len(got) {
		return nil, false
	}
	h := hmac.New(sha256.New, m.key)
	h.Write(raw[sealLen:])
	var sum [sha256.Size]byte
	if !hmac.Equal(h.Sum(sum[:0]), got[:]) {
		return nil, false
	}
	return raw[sealLen:], true
}

// canonicalTime reports whether ts is an entry time as FormatTime writes it.
func canonicalTime(ts string) bool {
	t, err := time.Parse(time.RFC3339Nano, ts)
	return err == nil && audit.FormatTime(t) == ts
}

// rejectedEntry is the entry made, in place of a pending record, of one the
// log refuses: not sealed by a node of this cluster, or malformed. It names
// the record (pending id, size, SHA-256), never its content, so nothing a
// database writer chose is signed; the record is deleted with it, so it is
// refused once. The refusal is also logged and counted.
func (l *Log) rejectedEntry(pid int64, raw []byte, why string) pendingRec {
	sum := sha256.Sum256(raw)
	l.metrics.pendingRejected.Inc()
	if l.opts.Logger != nil {
		l.opts.Logger.Warn("audit: pending record refused, not signed into the log", "pending_id", pid, "reason", why, "bytes", len(raw))
	}
	body, err := encodeEvent(audit.Event{Type: audit.TypePendingRejected, Status: 400, Reason: why,
		Detail: map[string]any{"pending_id": pid, "bytes": len(raw), "sha256": hex.EncodeToString(sum[:])}})
	if err != nil { // cannot happen: a valid type, a small detail
		body = []byte(`{"type":"` + audit.TypePendingRejected + `"}`)
	}
	return pendingRec{ts: audit.FormatTime(l.opts.Now()), body: body}
}

// openPending opens and parses a pending record, or makes its refusal.
func (l *Log) openPending(pid int64, raw []byte) pendingRec {
	rec, ok := l.pmac.open(raw)
	if !ok {
		return l.rejectedEntry(pid, raw, "not sealed by a node of this cluster (no valid MAC)")
	}
	p, ok := parsePending(rec)
	if !ok || !canonicalTime(p.ts) {
		return l.rejectedEntry(pid, raw, "malformed")
	}
	return p
}

// Recorded returns the Futures of the entries an action's own store
// transaction wrote: pids are the pending ids its commit gave the records
// Record made (store.Note.PIDs), since is Size as read before the action.
// Each Future answers with its entry's index once the log has sequenced
// it. The entry is durable already (the action's commit made it so): an
// error from its Wait (ctx, a log that closed) says only that its index is
// not known yet, never that it is lost. ctx bounds the look-up of entries
// sequenced before this call, as Add's bounds the queueing. recs, when
// given, are the records the commit wrote (store.Note.Records, recs[i]
// under pids[i]): a log with a journal then sequences them without reading
// them back from the store.
//
// In shared mode the Futures answer at once, with index -1: the entries
// are durable, which is all an action waits for, and their indexes are
// the sequencer's to give. Waiting for them would make every node read
// the log for each action it answers.
func (l *Log) Recorded(ctx context.Context, since int64, pids []int64, recs [][]byte) []Future {
	if len(pids) == 0 {
		return nil
	}
	if l.sh != nil {
		futs := make([]Future, len(pids))
		for i := range futs {
			futs[i] = answered(-1, nil)
		}
		l.kickPending()
		return futs
	}
	chs, out, missing := l.aw.register(pids)
	if l.js.j != nil && len(recs) == len(pids) {
		l.aw.hand(pids, recs, chs)
	}
	futs := make([]Future, len(pids))
	if missing {
		// Perhaps sequenced before this node kept track of it: look.
		if err := l.lookupSequenced(ctx, since); err != nil {
			l.aw.forget(pids)
			for i, ch := range chs {
				futs[i] = answered(out[i], nil)
				if ch != nil {
					futs[i] = answered(-1, err)
				}
			}
			return futs
		}
	}
	l.mu.Lock()
	shut := l.shut
	l.mu.Unlock()
	for i, ch := range chs {
		switch {
		case ch == nil:
			futs[i] = answered(out[i], nil)
		case shut:
			select {
			case r := <-ch: // answered meanwhile
				futs[i] = answered(r.Index, r.Err)
			default:
				futs[i] = answered(-1, fmt.Errorf("audit: waiting for the index of a recorded entry (it is recorded, pending): %w", ErrClosed))
			}
		default:
			futs[i] = Future{ch: ch, recorded: true}
		}
	}
	if shut {
		l.aw.forget(pids)
	} else {
		l.kickPending()
	}
	return futs
}

// settleWait bounds how long Settle waits for the indexes of an action's
// entries: they are durable already, so the action is answered anyway.
const settleWait = 5 * time.Second

// Settle waits, at most 5 s (settleWait), for the indexes of the entries an
// action's own store transaction wrote through note (since is Size as read
// before the action), so that they are in the log when the caller hears of
// the action, and returns the first error of their Futures. The entries are
// durable already (the commit made them so): an error says only that an
// index is not known yet, for the caller to log, never that the action
// failed. A nil note, or one that wrote nothing, has nothing to wait for.
// A caller whose action happened whatever its own caller does passes
// context.WithoutCancel.
func (l *Log) Settle(ctx context.Context, since int64, note *store.Note) error {
	if note == nil || len(note.PIDs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	for _, f := range l.Recorded(ctx, since, note.PIDs, note.Records) {
		if _, err := f.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// lookupSequenced reads the entries from from on and answers the waits
// of those it finds.
func (l *Log) lookupSequenced(ctx context.Context, from int64) error {
	ss, ok := l.st.(sequencedReader)
	if !ok {
		return nil
	}
	for {
		idx, got, err := ss.AuditSequenced(ctx, from, 10000)
		if err != nil {
			return fmt.Errorf("audit: looking up recorded entries: %w", err)
		}
		l.aw.report(idx, got)
		if len(idx) < 10000 {
			return nil
		}
		from = idx[len(idx)-1] + 1
	}
}

// kickPending wakes whoever sequences this node's pending records.
func (l *Log) kickPending() {
	switch {
	case l.sh != nil:
		l.sh.wake()
	case l.js.j != nil:
		l.aw.due.Store(true)
		l.js.kickLoop()
	default:
		select {
		case l.aw.kick <- struct{}{}:
		default:
		}
	}
}

// sequencedReader finds the entries made from pending records.
type sequencedReader interface {
	AuditSequenced(ctx context.Context, start int64, limit int) (idx, pids []int64, err error)
}

// localSequencer is what a log with its store to itself needs to sequence
// the pending records actions wrote (*store.DB).
type localSequencer interface {
	TryAuditSequencer(ctx context.Context) (*store.AuditSequencer, error)
}

// awaits answers Recorded's Futures: it keeps the pending ids waited for,
// and which entries were made from which pending records lately, so that a
// record sequenced before Recorded was called is still answered, mostly
// without a store read.
type awaits struct {
	mu      sync.Mutex
	waiting map[int64]chan result
	recent  map[int64]int64 // pending id -> index
	order   []int64         // recent's pending ids, oldest first
	maxPID  int64           // the largest pending id reported
	kick    chan struct{}   // no journal, no sharing: the committer sequences
	// handed are records their actions handed over (Recorded's recs), by
	// pending id, until sequenced or no longer waited for: the journal
	// loop takes them from here rather than from the store.
	handed map[int64][]byte
	due    atomic.Bool // journal: the loop should sequence
	swept  time.Time   // the committer's last look for records no Future asked for
}

// pendingSweep is how often a log with its store to itself looks for
// pending records that no Future asked for (their action's process died
// before it could): Open looks once, and Recorded asks for the others.
const pendingSweep = 5 * time.Second

// sweepDue reports whether the committer should look for such records
// now; only the committer calls it.
func (a *awaits) sweepDue() bool {
	if time.Since(a.swept) < pendingSweep {
		return false
	}
	a.swept = time.Now()
	return true
}

const recentEntries = 1 << 16

func (a *awaits) init() {
	a.waiting = map[int64]chan result{}
	a.recent = map[int64]int64{}
	a.handed = map[int64][]byte{}
	a.kick = make(chan struct{}, 1)
}

// hand keeps the records of the pids waited for (chs[i] not nil).
func (a *awaits) hand(pids []int64, recs [][]byte, chs []chan result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range pids {
		if chs[i] != nil {
			a.handed[id] = recs[i]
		}
	}
}

// take returns the handed records of the pending ids after+1, after+2, …
// (up to limit), stopping at the first not handed, and drops those at or
// below after (sequenced already). Pending ids are given in commit order
// on SQLite, so a record committed after the last one sequenced is the
// next id unless another action's has not been handed yet: then the
// caller reads the store, as it would have anyway.
func (a *awaits) take(after int64, limit int) (ids []int64, recs [][]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.handed {
		if id <= after {
			delete(a.handed, id)
		}
	}
	for id := after + 1; len(ids) < limit; id++ {
		rec, ok := a.handed[id]
		if !ok {
			break
		}
		delete(a.handed, id)
		ids, recs = append(ids, id), append(recs, rec)
	}
	return ids, recs
}

// register waits for pids: it returns a channel per pid not yet answered
// (nil for those it knows, whose index is in out), and missing when one
// may have been sequenced without this node knowing it still (pending ids
// are taken in commit order on SQLite; on PostgreSQL not quite, and then
// a look-up finds nothing and the wait goes on).
func (a *awaits) register(pids []int64) ([]chan result, []int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	chs := make([]chan result, len(pids))
	out := make([]int64, len(pids))
	missing := false
	for i, id := range pids {
		if idx, ok := a.recent[id]; ok {
			out[i] = idx
			continue
		}
		if ch, ok := a.waiting[id]; ok {
			chs[i] = ch // waited for already: both Futures share its answer
			continue
		}
		ch := make(chan result, 1)
		a.waiting[id] = ch
		chs[i] = ch
		missing = missing || id <= a.maxPID
	}
	return chs, out, missing
}

// forget stops waiting for pids.
func (a *awaits) forget(pids []int64) {
	a.mu.Lock()
	for _, id := range pids {
		delete(a.waiting, id)
		delete(a.handed, id)
	}
	a.mu.Unlock()
}

// report tells of entries idx[i] made from pending records pids[i] (-1:
// none).
func (a *awaits) report(idx, pids []int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range pids {
		if id < 0 {
			continue
		}
		if ch, ok := a.waiting[id]; ok {
			ch <- result{Index: idx[i]}
			delete(a.waiting, id)
		}
		if _, ok := a.recent[id]; !ok {
			a.recent[id] = idx[i]
			a.order = append(a.order, id)
			a.maxPID = max(a.maxPID, id)
		}
	}
	if len(a.order) > 2*recentEntries {
		for _, old := range a.order[:len(a.order)-recentEntries] {
			delete(a.recent, old)
		}
		a.order = append(a.order[:0], a.order[len(a.order)-recentEntries:]...)
	}
}

// closeAll answers every Future still waiting: the log closed before their
// entries were sequenced (they stay pending for the next Open).
func (a *awaits) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, ch := range a.waiting {
		ch <- result{Index: -1, Err: fmt.Errorf("audit: closed before entry %d was sequenced (it is recorded, pending): %w", id, ErrClosed)}
		delete(a.waiting, id)
	}
	clear(a.handed)
}

// sequenceLocal gives the pending records actions wrote their indexes, in
// the committer, on a log without a journal that has its store to itself.
func (l *Log) sequenceLocal() {
	if l.sh != nil {
		// Several nodes: the shared sequencer places pending records (and
		// writes outcomes' decision indexes in, which this path cannot).
		return
	}
	ls, ok := l.st.(localSequencer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	seq, err := ls.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		return
	}
	defer seq.Close()
	for {
		began := time.Now()
		if l.stale {
			if err := l.reload(ctx); err != nil {
				return
			}
		}
		ids, recs, err := seq.Pending(ctx, 0, l.opts.MaxBatch, nil)
		if err != nil || len(ids) == 0 {
			return
		}
		start := l.Size()
		entries := l.pendingEntries(start, ids, recs)
		end := start + int64(len(entries))
		hashes, root, err := l.hashQueue(start, end, entries)
		if err == nil {
			err = seq.Sequence(ctx, start, entries, ids, nil, tlog.StoredHashCount(start), hashesOf(hashes))
		}
		if err != nil {
			l.stale = true
			l.failPending(err)
			return
		}
		l.advance(start, end, hashes)
		l.stored(end, root, len(entries), began)
		l.aw.report(indexes(start, len(ids)), ids)
		if len(ids) < l.opts.MaxBatch {
			return
		}
	}
}

// failPending marks the log unhealthy: pending records could not be
// sequenced (they stay pending, and are tried again).
func (l *Log) failPending(err error) {
	l.mu.Lock()
	l.commitErr = fmt.Errorf("audit log %w: sequencing recorded entries: %v", failclosed.ErrUnavailable, err)
	l.mu.Unlock()
}

// pendingEntries builds the entries at start of pending records (on a
// node with its store to itself: an action's "TIME\nBODY"), a refusal in
// place of each one the log does not take.
func (l *Log) pendingEntries(start int64, ids []int64, recs [][]byte) [][]byte {
	entries := make([][]byte, len(recs))
	for i, raw := range recs {
		p := l.openPending(ids[i], raw)
		if p.intent || p.ref > 0 {
			// A shared log's forms: no node of this log wrote it.
			p = l.rejectedEntry(ids[i], raw, "malformed")
		}
		entries[i] = audit.AppendEntry(nil, start+int64(i), p.ts, p.body)
	}
	return entries
}

func indexes(start int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = start + int64(i)
	}
	return out
}

// pendingFolder is a store that folds entries made from pending records
// together with their deletion (*store.DB).
type pendingFolder interface {
	AppendAuditFrom(ctx context.Context, start int64, entries [][]byte, pids []int64, firstHash int64, hashes [][32]byte, mode store.AuditCommit) error
}

// sequenceJournal gives the pending records actions wrote their indexes,
// in the journal loop: each becomes a journal record of its own (it names
// the pending record, so that a replay deletes it as the fold does) and is
// folded at once, for its action's Future. Records journaled but not folded
// yet are not read again.
func (l *Log) sequenceJournal() {
	if l.sh != nil {
		return // the shared sequencer's, as in sequenceLocal
	}
	ls, ok := l.st.(localSequencer)
	if !ok {
		return
	}
	if _, ok := l.st.(pendingFolder); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	seq, err := ls.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		return
	}
	defer seq.Close()
	js := &l.js
	for {
		js.mu.Lock()
		after := js.lastPID
		js.mu.Unlock()
		ids, recs := l.aw.take(after, l.opts.MaxBatch)
		if len(ids) == 0 {
			var err error
			if ids, recs, err = seq.Pending(ctx, after, l.opts.MaxBatch, nil); err != nil {
				l.failPending(err)
				return
			}
		}
		if len(ids) == 0 {
			return
		}
		js.mu.Lock()
		for i, id := range ids {
			idx := js.size
			entries := l.pendingEntries(idx, ids[i:i+1], recs[i:i+1])
			rec := make([]byte, recPrefix, recPrefix+len(entries[0]))
			rec[0] = recPending
			binary.BigEndian.PutUint64(rec[1:recPrefix], uint64(id))
			rec = append(rec, entries[0]...)
			// The record is durable in the store already: the journal
			// need not sync for it (journalCopy).
			err := l.journalCopy(rec, 0)
			if err == nil {
				js.size++
				js.queue = append(js.queue, rec[recPrefix:])
				js.pids[idx] = id
				js.lastPID = id
			}
			if err != nil {
				js.mu.Unlock()
				l.failPending(err)
				return
			}
		}
		js.integrateBy = time.Now() // a Future is waiting for them
		js.mu.Unlock()
		if len(ids) < l.opts.MaxBatch {
			return
		}
	}
}

// pidsOf returns the pending record of each entry in [start, end) (-1:
// none), or nil if none has one; js.mu is held.
func (js *jstate) pidsOf(start, end int64) []int64 {
	if len(js.pids) == 0 {
		return nil
	}
	var out []int64
	for idx := start; idx < end; idx++ {
		id, ok := js.pids[idx]
		if !ok {
			continue
		}
		if out == nil {
			out = make([]int64, end-start)
			for i := range out {
				out[i] = -1
			}
		}
		out[idx-start] = id
	}
	return out
}

// foldedPIDs answers the Futures of the entries at start that were made
// from pending records (pids from pidsOf); js.mu is held.
func (l *Log) foldedPIDs(start int64, pids []int64) {
	if pids == nil {
		return
	}
	for i, id := range pids {
		if id >= 0 {
			delete(l.js.pids, start+int64(i))
		}
	}
	l.aw.report(indexes(start, len(pids)), pids)
}

// replayedPIDs is pidsOf for the entries a replay folds.
func replayedPIDs(pids map[int64]int64, start int64, n int) []int64 {
	js := jstate{pids: pids}
	return js.pidsOf(start, start+int64(n))
}
