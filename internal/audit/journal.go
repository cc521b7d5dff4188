package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// The journal is the Log's write-ahead file for written-mode entries (the
// gateway's). Writing an entry there is one write(2) into the page cache,
// after which a kill -9 of the process cannot lose it; the Log then folds
// journaled entries into the store in larger, less frequent transactions,
// and a restart folds in whatever a crash left behind. The store stays the
// log: the journal only ever holds entries the store may not have yet, and
// it is emptied once the store has them durably.
//
// A record is its payload's length (4 bytes, big-endian), the payload's
// CRC-32C (4 bytes), and the payload, one of:
//
//   - an entry, which starts with its own index ({"index":N,…);
//   - 'I', an intent id (8 bytes), the time, '\n' and an event: a gateway
//     request about to be forwarded, whose entry Finish makes later;
//   - 'E', an intent id and an entry: the entry that completes that intent.
//
// Reading stops at the first record that is cut short or does not match its
// CRC: a power loss can leave such a tail, and nothing after it was
// acknowledged (the journal is fdatasynced within syncDelay).

const (
	journalHeader = 8
	// maxJournalEntry bounds one record, so that a corrupt length cannot
	// make the reader allocate without end.
	maxJournalEntry = 16 << 20
	// journalResetSize is the size past which the Log empties the journal
	// after its next durable store commit.
	journalResetSize = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journal is two files, path and path+".1". Appenders write one; when it
// passes resetSize they move to the other, and the first is emptied once
// the store has everything in it durably, without holding up the
// appenders (emptying a single file meant a durable store commit with every
// appender waiting). Running requests' intents are written again to the
// new file first. Entries are ordered by their index, not by file.
type journal struct {
	f      [2]*os.File
	size   [2]int64 // bytes of whole records
	active int      // the file appenders write
	buf    []byte
}

// openJournal opens (creating) the journal at path, locked against a second
// process, and returns the records both files hold; torn tails are cut.
func openJournal(path string) (*journal, [][]byte, error) {
	j := &journal{}
	var all [][]byte
	for i, p := range [2]string{path, path + ".1"} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			j.close()
			return nil, nil, fmt.Errorf("audit: opening journal: %w", err)
		}
		j.f[i] = f
		if i == 0 {
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
				j.close()
				return nil, nil, fmt.Errorf("audit: journal %s is in use by another process: %w", path, err)
			}
		}
		recs, size, err := readJournal(bufio.NewReaderSize(f, 64<<10))
		if err != nil {
			j.close()
			return nil, nil, fmt.Errorf("audit: reading journal %s: %w", p, err)
		}
		if err := f.Truncate(size); err != nil {
			j.close()
			return nil, nil, fmt.Errorf("audit: cutting the journal's torn tail: %w", err)
		}
		j.size[i] = size
		all = append(all, recs...)
	}
	return j, all, nil
}

// readJournal reads whole, valid records and returns them with the bytes
// they take; only an I/O error is an error.
func readJournal(r io.Reader) ([][]byte, int64, error) {
	var entries [][]byte
	var size int64
	var h [journalHeader]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return entries, size, nil
			}
			return nil, 0, err
		}
		n := binary.BigEndian.Uint32(h[:4])
		if n == 0 || n > maxJournalEntry {
			return entries, size, nil
		}
		e := make([]byte, n)
		if _, err := io.ReadFull(r, e); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return entries, size, nil
			}
			return nil, 0, err
		}
		if crc32.Checksum(e, castagnoli) != binary.BigEndian.Uint32(h[4:]) || !validRecord(e) {
			return entries, size, nil
		}
		entries = append(entries, e)
		size += journalHeader + int64(n)
	}
}

// writeAt writes entries' records in one write at off (the end of the
// whole records) and returns the bytes written; the caller adds them to
// size. On failure it cuts the file back, so that no partial record is
// ever followed by a later whole one. One writer at a time.
func (j *journal) writeAt(i int, entries [][]byte, off int64) (int64, error) {
	b := j.buf[:0]
	for _, e := range entries {
		b = appendRecord(b, e)
	}
	if cap(b) <= 1<<20 {
		j.buf = b
	}
	if _, err := j.f[i].WriteAt(b, off); err != nil {
		if terr := j.f[i].Truncate(off); terr != nil {
			return 0, fmt.Errorf("audit: writing journal: %w (and cutting it back: %v)", err, terr)
		}
		return 0, fmt.Errorf("audit: writing journal: %w", err)
	}
	return int64(len(b)), nil
}

// Record kinds other than a plain entry, and the bytes before their body.
const (
	recIntent   = 'I'
	recComplete = 'E'
	recPrefix   = 9 // kind and intent id
)

// validRecord tells whether a payload is one of the record kinds.
func validRecord(p []byte) bool {
	if len(p) > 0 && (p[0] == recIntent || p[0] == recComplete) {
		if len(p) <= recPrefix {
			return false
		}
		if p[0] == recComplete {
			return entryIndex(p[recPrefix:]) >= 0
		}
		return bytes.IndexByte(p[recPrefix:], '\n') > 0
	}
	return entryIndex(p) >= 0
}

// journalContents is what a journal holds, parsed.
type journalContents struct {
	entries  [][]byte // in index order
	intents  []intentRec
	complete map[int64]uint64 // entry index -> the intent it completes
}

type intentRec struct {
	id   uint64
	ts   string
	body []byte
}

// parseRecords sorts a journal's payloads into entries and intents.
func parseRecords(recs [][]byte) journalContents {
	c := journalContents{complete: map[int64]uint64{}}
	seen := map[uint64]bool{}
	for _, p := range recs {
		switch p[0] {
		case recIntent:
			id := binary.BigEndian.Uint64(p[1:recPrefix])
			if seen[id] { // written again to the other file
				continue
			}
			seen[id] = true
			rest := p[recPrefix:]
			nl := bytes.IndexByte(rest, '\n')
			c.intents = append(c.intents, intentRec{id: id, ts: string(rest[:nl]), body: rest[nl+1:]})
		case recComplete:
			c.complete[entryIndex(p[recPrefix:])] = binary.BigEndian.Uint64(p[1:recPrefix])
			c.entries = append(c.entries, p[recPrefix:])
		default:
			c.entries = append(c.entries, p)
		}
	}
	slices.SortStableFunc(c.entries, func(a, b []byte) int { return cmp.Compare(entryIndex(a), entryIndex(b)) })
	slices.SortFunc(c.intents, func(a, b intentRec) int { return cmp.Compare(a.id, b.id) })
	return c
}

// appendRecord appends the journal record of payload e to b.
func appendRecord(b, e []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(e, castagnoli))
	return append(b, e...)
}

// reset empties both files; the store must hold every entry durably.
func (j *journal) reset() error {
	for i := range j.f {
		if err := j.empty(i); err != nil {
			return err
		}
		j.size[i] = 0
	}
	j.active = 0
	return nil
}

// empty empties file i, durably: emptied records must not come back after
// a power loss, or a replay would record a finished request again. It does
// not touch size, which the caller guards.
func (j *journal) empty(i int) error {
	if err := j.f[i].Truncate(0); err != nil {
		return fmt.Errorf("audit: emptying journal: %w", err)
	}
	return j.sync(i)
}

// sync makes the records of file i durable.
func (j *journal) sync(i int) error {
	if err := syscall.Fdatasync(int(j.f[i].Fd())); err != nil {
		return fmt.Errorf("audit: syncing journal: %w", err)
	}
	return nil
}

func (j *journal) close() error {
	var err error
	for _, f := range j.f {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	return err
}

// integrateDelay is how long a journaled entry may wait to be folded into
// the store: the longer, the larger and cheaper the transactions (at 2 ms a
// gateway at saturation spent 40% more CPU on them than at 10 ms), and the
// later readers (entries API, proofs, checkpoints, sinks) see the entry.
const integrateDelay = 10 * time.Millisecond

// syncDelay bounds how long a journaled entry stays in the page cache only:
// a power loss loses at most this much, as the store's own SyncDelay.
const syncDelay = 5 * time.Millisecond

// lazyFlush bounds how long a lazy entry (a gateway response) waits for a
// write to share when no request comes.
const lazyFlush = time.Millisecond

// jstate is the Log's journal-mode state, guarded by its mutex: appenders
// journal under it, the committer folds the queue into the store.
type jstate struct {
	mu          sync.Mutex
	j           *journal
	size        int64              // entries journaled or stored: the next index
	start       int64              // index of queue[0]
	queue       [][]byte           // journaled entries not yet in the store
	hashes      []tlog.Hash        // the stored hashes they add
	waiters     []waiter           // durable appends waiting for the store
	pending     [][]byte           // entries of the queue not yet written
	spare       [][]byte           // the last written batch, reused for pending
	seq         uint64             // records ever put in pending
	wseq        uint64             // records written: the first wseq of seq
	writing     bool               // an appender is writing pending, without mu
	fails       uint64             // failed writes so far
	cond        *sync.Cond         // on mu: a write ended
	old         int                // the journal file waiting to be emptied, or -1
	intents     map[uint64]*Intent // begun, in the journal, not finished
	resetSize   int64              // journalResetSize; tests lower it
	nextIntent  uint64
	unsynced    bool      // journal writes since its last fdatasync
	flushBy     time.Time // when pending must be written
	integrateBy time.Time // when the queue must reach the store
	syncBy      time.Time // when the journal must be synced
	kick        chan struct{}
}

// waiter is a durable Append waiting for its entry to reach the store.
type waiter struct {
	index int64
	done  chan Result
}

// replay folds into the store, durably, the journal's entries it lacks,
// then an entry for each intent that no entry completed (a request that
// was forwarded when the process died: its decision, with no outcome),
// then empties the journal. Entries the store has are skipped; the first
// entry out of sequence ends the replay (a power loss can leave an older
// record after a torn one).
func (l *Log) replay(ctx context.Context, recs [][]byte) error {
	c := parseRecords(recs)
	next := l.size
	var todo [][]byte
	for _, e := range c.entries {
		idx := entryIndex(e)
		if idx < next { // stored, or a duplicate a failed write left
			continue
		}
		if idx != next {
			break
		}
		todo = append(todo, e)
		next++
	}
	// An intent is complete if its entry is stored or replayed; one whose
	// entry lies past a gap gets its decision recorded instead.
	complete := map[uint64]bool{}
	for idx, id := range c.complete {
		if idx < next {
			complete[id] = true
		}
	}
	for _, in := range c.intents {
		if !complete[in.id] {
			todo = append(todo, buildEntry(nil, next, in.ts, in.body))
			next++
		}
	}
	if len(todo) > 0 {
		start := l.size
		hashes, err := l.hashEntries(ctx, start, todo)
		if err != nil {
			return fmt.Errorf("audit: replaying journal: %w", err)
		}
		if err := l.st.AppendAudit(ctx, start, todo, tlog.StoredHashCount(start), hashesOf(hashes)); err != nil {
			return fmt.Errorf("audit: replaying %d journaled entries at %d: %w", len(todo), start, err)
		}
		if err := l.reload(ctx); err != nil {
			return fmt.Errorf("audit: after replaying journal: %w", err)
		}
		l.recovered = len(todo)
	}
	l.js.size, l.js.start = l.size, l.size
	l.js.intents = map[uint64]*Intent{}
	l.js.resetSize = journalResetSize
	l.js.old = -1
	return l.js.j.reset()
}

// Recovered returns how many entries Open folded in from the journal that
// a crash had left out of the store.
func (l *Log) Recovered() int { return l.recovered }

// appendJournal stamps ev with the next index, in the caller's goroutine,
// and, unless lazy, waits until it is written to the journal: from then a
// kill -9 cannot lose it. Concurrent appenders share writes: the first to
// find no write running writes everything pending, outside the lock, while
// the others wait for it. A lazy entry (a record of what already happened)
// waits for the next write, or lazyFlush. A durable append also gets a
// channel answered once the store has the entry durably. While the store
// fails, only lazy entries are taken.
func (l *Log) appendJournal(ev Event, lazy, durable bool) (int64, chan Result, error) {
	return l.appendJournalFor(ev, nil, nil, lazy, durable)
}

// appendJournalFor is appendJournal; with in set, ev completes that intent
// (a lazy append): while in is pending its record says so, and once in has
// an entry of its own, outcome(that entry's index) is appended instead.
func (l *Log) appendJournalFor(ev Event, in *Intent, outcome func(int64) Event, lazy, durable bool) (int64, chan Result, error) {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	body, ts, err := l.admit(ev, lazy)
	if err != nil {
		return -1, nil, err
	}
	js := &l.js
	js.mu.Lock()
	defer js.mu.Unlock()
	prefix := 0
	if in != nil {
		if _, ok := js.intents[in.id]; ok {
			delete(js.intents, in.id)
			prefix = recPrefix
		} else if body, err = encodeEvent(outcome(in.index)); err != nil {
			return -1, nil, err
		}
	}
	idx := js.size
	rec := make([]byte, prefix, prefix+len(body)+48+len(ts))
	if prefix > 0 {
		rec[0] = recComplete
		binary.BigEndian.PutUint64(rec[1:recPrefix], in.id)
	}
	rec = buildEntry(rec, idx, ts, body)
	entry := rec[prefix:]
	hashes, err := l.hashEntries(context.Background(), idx, [][]byte{entry})
	if err != nil { // not expected: the frontier covers every append
		return -1, nil, fmt.Errorf("%w: hashing %s entry: %v", ErrUnavailable, ev.Type, err)
	}
	l.advance(idx, idx+1, hashes)
	js.size++
	kick := false
	if len(js.queue) == 0 {
		js.integrateBy = time.Now().Add(integrateDelay)
		kick = true
	}
	js.queue = append(js.queue, entry)
	js.hashes = append(js.hashes, hashes...)
	kick = js.put(rec) || kick
	var done chan Result
	if durable {
		done = make(chan Result, 1)
		js.waiters = append(js.waiters, waiter{index: idx, done: done})
		kick = true
	}
	if kick {
		js.kickLoop()
	}
	if lazy {
		return idx, done, nil
	}
	if err := l.awaitWrite(js.seq); err != nil {
		return -1, nil, err
	}
	return idx, done, nil
}

// admit encodes ev and stamps its time if the log takes it: not closed,
// and healthy unless lazy (a record of what already happened). The caller
// holds l.closeMu for reading until the record is queued.
func (l *Log) admit(ev Event, lazy bool) ([]byte, string, error) {
	if l.closed {
		return nil, "", fmt.Errorf("audit: appending %s entry: %w", ev.Type, ErrClosed)
	}
	if !lazy {
		if err := l.Healthy(); err != nil {
			return nil, "", err
		}
	}
	body, err := encodeEvent(ev)
	if err != nil {
		return nil, "", err
	}
	return body, l.opts.Now().UTC().Format(timeLayout), nil
}

// put queues record rec for the next write and reports whether the
// committer must learn of it (to flush it within lazyFlush). js.mu is held.
func (js *jstate) put(rec []byte) bool {
	first := len(js.pending) == 0
	if first {
		js.flushBy = time.Now().Add(lazyFlush)
	}
	js.pending = append(js.pending, rec)
	js.seq++
	return first
}

func (js *jstate) kickLoop() {
	select {
	case js.kick <- struct{}{}:
	default:
	}
}

// awaitWrite returns once the record numbered seq is written, writing it
// if no one else is; js.mu is held. If a write fails meanwhile, the record
// stays pending (the store still gets its entry), but the caller must not
// act: it gets the log's error.
func (l *Log) awaitWrite(seq uint64) error {
	js := &l.js
	fails := js.fails
	for js.wseq < seq {
		if js.fails != fails {
			return l.Healthy()
		}
		if js.writing {
			js.cond.Wait()
			continue
		}
		l.writePending()
	}
	return nil
}

// writePending writes the pending entries, with js.mu held on entry and on
// return but not during the write; one writer at a time.
func (l *Log) writePending() {
	js := &l.js
	if js.writing || len(js.pending) == 0 {
		return
	}
	js.writing = true
	file := js.j.active
	batch, end, off := js.pending, js.seq, js.j.size[file]
	js.pending = js.spare[:0]
	js.mu.Unlock()
	n, err := js.j.writeAt(file, batch, off)
	js.mu.Lock()
	js.writing = false
	if err != nil {
		js.pending = append(batch, js.pending...)
		js.fails++
		l.mu.Lock()
		l.commitErr = fmt.Errorf("%w: %v", ErrUnavailable, err)
		l.mu.Unlock()
		l.metrics.appendErrors.Inc()
	} else {
		js.j.size[file] += n
		js.wseq = end
		clear(batch)
		js.spare = batch[:0]
		if !js.unsynced {
			js.unsynced, js.syncBy = true, time.Now().Add(syncDelay)
			select {
			case js.kick <- struct{}{}:
			default:
			}
		}
	}
	js.cond.Broadcast()
}

// Intent is a gateway request recorded before it is forwarded; Finish
// completes it.
type Intent struct {
	id    uint64
	ts    string
	body  []byte
	rec   []byte // its journal record
	index int64  // the decision's own entry, or -1 while only an intent
}

// EntryIntent is an Intent whose decision already has the entry at index
// (appended with Append): Finish appends the outcome beside it.
func EntryIntent(index int64) *Intent { return &Intent{index: index} }

// Begin records ev, the decision to forward a request, so that a crash of
// the process can no longer lose it, and returns the Intent that Finish
// completes. With a journal it writes an intent record and no entry:
// Finish makes the request's one entry, and a restart after a crash makes
// one from the intent alone. Without a journal it appends ev as an entry
// (AppendWritten) and Finish appends a second one for the outcome.
func (l *Log) Begin(ctx context.Context, ev Event) (*Intent, error) {
	if l.js.j == nil {
		idx, err := l.AppendWritten(ctx, ev)
		if err != nil {
			return nil, err
		}
		return &Intent{index: idx}, nil
	}
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	body, ts, err := l.admit(ev, false)
	if err != nil {
		return nil, err
	}
	js := &l.js
	js.mu.Lock()
	defer js.mu.Unlock()
	js.nextIntent++
	in := &Intent{id: js.nextIntent, index: -1}
	rec := make([]byte, 0, recPrefix+len(ts)+1+len(body))
	rec = append(rec, recIntent)
	rec = binary.BigEndian.AppendUint64(rec, in.id)
	rec = append(append(append(rec, ts...), '\n'), body...)
	in.ts, in.body, in.rec = ts, rec[len(rec)-len(body):], rec
	if js.put(rec) {
		js.kickLoop()
	}
	js.intents[in.id] = in
	if err := l.awaitWrite(js.seq); err != nil {
		delete(js.intents, in.id)
		return nil, err
	}
	return in, nil
}

// Finish records the outcome of in without waiting. While in is an intent
// in the journal, whole (the decision with its outcome) becomes the
// request's one entry; otherwise (no journal, or the intent was turned into
// an entry of its own when the journal was emptied) outcome(i) is appended,
// i being the decision's entry.
func (l *Log) Finish(in *Intent, whole Event, outcome func(decision int64) Event) {
	if l.js.j == nil {
		l.AppendAsync(outcome(in.index))
		return
	}
	// Not waited for: a failure marks the log unhealthy and counts in
	// mayfly_audit_append_errors_total.
	_, _, _ = l.appendJournalFor(whole, in, outcome, true, false)
}

// journalLoop is the committer in journal mode: it syncs the journal and
// folds its queue into the store when they are due, at once for durable
// appends.
func (l *Log) journalLoop() {
	defer close(l.done)
	js := &l.js
	probe := time.NewTicker(l.opts.CheckpointInterval)
	defer probe.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-js.kick:
		case <-timer.C:
		case <-probe.C:
			l.probe()
		case <-l.stop:
			_ = l.integrate(true) // on failure the journal keeps them for the next Open
			return
		}
		js.mu.Lock()
		flushNow := len(js.pending) > 0 && !time.Now().Before(js.flushBy)
		js.mu.Unlock()
		if flushNow {
			js.mu.Lock()
			l.writePending()
			js.mu.Unlock()
		}
		js.mu.Lock()
		now := time.Now()
		syncNow := js.unsynced && !now.Before(js.syncBy)
		synced := js.j.active
		if syncNow {
			js.unsynced = false
		}
		integrateNow := len(js.waiters) > 0 || len(js.queue) >= l.opts.MaxBatch ||
			len(js.queue) > 0 && !now.Before(js.integrateBy)
		js.mu.Unlock()
		if syncNow {
			if err := js.j.sync(synced); err != nil {
				l.mu.Lock()
				l.commitErr = fmt.Errorf("%w: syncing the journal: %v", ErrUnavailable, err)
				l.mu.Unlock()
			}
		}
		if integrateNow {
			_ = l.integrate(false) // on failure: unhealthy; probe retries
		}
		js.mu.Lock()
		var next time.Time
		if len(js.queue) > 0 {
			next = js.integrateBy
		}
		if js.unsynced && (next.IsZero() || js.syncBy.Before(next)) {
			next = js.syncBy
		}
		if len(js.pending) > 0 && (next.IsZero() || js.flushBy.Before(next)) {
			next = js.flushBy
		}
		js.mu.Unlock()
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
	}
}

// integrate commits the queue to the store: durably if a durable append
// waits or a journal file waits to be emptied, else kept (the journal keeps
// the entries until a durable commit covers them). When the active journal
// file has passed resetSize, appenders move to the other one first, and the
// first is emptied once the commit is durable. final (Close) gives running
// requests entries of their own, commits durably and empties both files.
func (l *Log) integrate(final bool) error {
	js := &l.js
	js.mu.Lock()
	if final {
		return l.integrateFinal()
	}
	// An entry completing an intent must be in the journal before it is
	// in the store, or a replay after a crash would find the intent
	// unfinished and record the request twice.
	if err := l.awaitWrite(js.seq); err != nil {
		js.mu.Unlock()
		return err
	}
	rotated := false
	if js.old < 0 && js.j.size[js.j.active] >= js.resetSize {
		for js.writing {
			js.cond.Wait()
		}
		js.old, js.j.active = js.j.active, js.j.active^1
		// Running requests' intents go to the new file, so that the old
		// one can go.
		ids := make([]uint64, 0, len(js.intents))
		for id := range js.intents {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			js.put(js.intents[id].rec)
		}
		rotated = true
	}
	old := js.old
	if len(js.queue) == 0 && old < 0 {
		js.mu.Unlock()
		return nil
	}
	began := time.Now()
	start, entries, hashes, waiters := js.start, js.queue, js.hashes, js.waiters
	end := js.size
	root, err := tlog.TreeHash(end, l.frontierReader())
	if err != nil { // cannot happen: the frontier is complete
		js.mu.Unlock()
		return fmt.Errorf("audit: tree hash of %d entries: %w", end, err)
	}
	durable := len(waiters) > 0 || old >= 0
	// Appenders go on journaling while the store commits.
	js.start, js.queue, js.hashes, js.waiters = end, nil, nil, nil
	if rotated {
		js.kickLoop() // the intents put again are written within lazyFlush
	}
	js.mu.Unlock()

	err = l.fold(start, entries, hashes, durable)
	js.mu.Lock()
	if err != nil {
		for _, w := range waiters {
			w.done <- Result{Index: -1, Err: err}
		}
		// Put them back in front of what came meanwhile.
		js.start = start
		js.queue = append(entries, js.queue...)
		js.hashes = append(hashes, js.hashes...)
		js.mu.Unlock()
		return err
	}
	l.stored(end, root, len(entries), began)
	for _, w := range waiters {
		w.done <- Result{Index: w.index}
	}
	if durable && len(js.queue) == 0 && len(js.intents) == 0 {
		// The store has every journaled entry on disk and no intent
		// waits: no need to sync the journal for them.
		js.unsynced = false
	}
	js.mu.Unlock()
	if durable && old >= 0 {
		// The store has every entry of the old file on disk; no one
		// writes that file any more.
		if err := js.j.empty(old); err != nil {
			return err // tried again at the next commit
		}
		js.mu.Lock()
		js.j.size[old] = 0
		js.old = -1
		js.mu.Unlock()
	}
	return nil
}

// integrateFinal is integrate(true), with js.mu held, which it releases.
func (l *Log) integrateFinal() error {
	js := &l.js
	defer js.mu.Unlock()
	for js.writing {
		js.cond.Wait()
	}
	// Requests still running get entries of their own: the journal goes.
	if err := l.materialize(); err != nil {
		return err
	}
	start, entries, hashes, waiters := js.start, js.queue, js.hashes, js.waiters
	end := js.size
	root, err := tlog.TreeHash(end, l.frontierReader())
	if err != nil {
		return fmt.Errorf("audit: tree hash of %d entries: %w", end, err)
	}
	began := time.Now()
	if err := l.fold(start, entries, hashes, true); err != nil {
		for _, w := range waiters {
			w.done <- Result{Index: -1, Err: err}
		}
		js.waiters = nil
		return err // the journal keeps them for the next Open
	}
	l.stored(end, root, len(entries), began)
	for _, w := range waiters {
		w.done <- Result{Index: w.index}
	}
	js.start, js.queue, js.hashes, js.waiters = end, nil, nil, nil
	js.wseq = js.seq
	clear(js.pending)
	js.pending = js.pending[:0]
	return js.j.reset()
}

// fold commits entries at start to the store; on failure the log turns
// unhealthy.
func (l *Log) fold(start int64, entries [][]byte, hashes []tlog.Hash, durable bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	appendFunc := l.st.AppendAudit
	if ks, ok := l.st.(keptStorage); ok && !durable {
		// The journal keeps these until a durable commit covers them, so
		// the store need not sync them soon.
		appendFunc = ks.AppendAuditKept
	} else if ws, ok := l.st.(writtenStorage); ok && !durable {
		appendFunc = ws.AppendAuditWritten
	}
	if err := appendFunc(ctx, start, entries, tlog.StoredHashCount(start), hashesOf(hashes)); err != nil {
		err = fmt.Errorf("%w: storing %d journaled entries: %v", ErrUnavailable, len(entries), err)
		l.mu.Lock()
		l.commitErr = err
		l.mu.Unlock()
		return err
	}
	return nil
}

// materialize gives every live intent an entry of its own, the decision
// alone, in the queue; js.mu is held.
func (l *Log) materialize() error {
	js := &l.js
	ids := make([]uint64, 0, len(js.intents))
	for id := range js.intents {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		in := js.intents[id]
		idx := js.size
		entry := buildEntry(nil, idx, in.ts, in.body)
		hashes, err := l.hashEntries(context.Background(), idx, [][]byte{entry})
		if err != nil {
			return fmt.Errorf("audit: hashing a running request's entry: %w", err)
		}
		l.advance(idx, idx+1, hashes)
		js.size++
		js.queue = append(js.queue, entry)
		js.hashes = append(js.hashes, hashes...)
		in.index = idx
		delete(js.intents, id)
	}
	return nil
}

// hashEntries computes the stored hashes entries (at [start, …)) add to
// the tree whose frontier the Log holds.
func (l *Log) hashEntries(ctx context.Context, start int64, entries [][]byte) ([]tlog.Hash, error) {
	firstHash := tlog.StoredHashCount(start)
	hashes := make([]tlog.Hash, 0, 2*len(entries)+1)
	r := l.batchReader(ctx, firstHash, &hashes)
	for i, e := range entries {
		hs, err := tlog.StoredHashes(start+int64(i), e, r)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, hs...)
	}
	return hashes, nil
}
