package auditlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// Options tune a Log. The zero value is usable.
type Options struct {
	// MaxBatch bounds the entries of one group commit (default 1000).
	MaxBatch int
	// CommitTimeout bounds one storage transaction, retries included
	// (default 10s).
	CommitTimeout time.Duration
	// CheckpointInterval is how often a new checkpoint is signed while the
	// log grows (default 500ms; never more than 1s is sensible).
	CheckpointInterval time.Duration
	// Requests lists the entry types of requests served at volume, which
	// Add answers once written rather than durable (see the package
	// comment) and refuses at once while the log is unhealthy, and whose
	// decision and outcome Begin and Finish record (default: the
	// gateway's, audit.TypeGateway).
	Requests []string
	// DurableRequests makes requests' entries durable too, as every
	// other entry is (the server's gateway_durable_audit): on disk before
	// Wait answers, and the decision of a forwarded request an entry of
	// its own.
	DurableRequests bool
	// Journal is the path of a write-ahead journal for written-mode
	// entries (requests' entries and outcomes): they are answered once in it,
	// and reach the store in transactions of everything journaled within
	// 10 ms. It requires the Log to be its store's only writer (embedded
	// SQLite; a lock on the file keeps a second process out). Empty: none,
	// and every batch is its own store transaction.
	Journal string
	// Shared says that other nodes append to the same store (PostgreSQL):
	// entries are recorded without a tree position, durably, and one node
	// at a time sequences them (see shared.go). The store must implement
	// AddAuditPending, AuditSequenced and TryAuditSequencer (*store.DB
	// does). Not with Journal.
	Shared bool
	// Registerer receives the log's metrics (nil: none).
	Registerer prometheus.Registerer
	// Logger receives what the log refuses to sign (pending records no
	// node of this cluster wrote); nil: none.
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests only.
	Now func() time.Time

	journalCapacity int64 // each journal file's size (default journalCapacity); tests lower it
	// intentHold is how long a shared log's sequencer holds a decision
	// for its completion (default intentHold); tests lower it.
	intentHold time.Duration
	// seqRound, if set, is called as each round of a shared log's
	// sequencing loop begins, with the time the loop took as its start
	// (tests: the hook's own clock would add its scheduling delay).
	seqRound func(l *Log, began time.Time)
}

func (o *Options) defaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 10 * time.Second
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Requests == nil {
		o.Requests = []string{audit.TypeGateway}
	}
}

// maxLinger bounds how long a group commit waits for writers it expects.
const maxLinger = 500 * time.Microsecond

// lazyLinger bounds how long a batch of only lazy entries (which nobody
// awaits) waits for an awaited one to share its commit. Without it a
// gateway's response entry takes a commit of its own just before the next
// request's entry needs one, doubling that request's wait.
const lazyLinger = 2 * time.Millisecond

// maxConflictRetries bounds the retries of one group commit when other
// writers keep appending first.
const maxConflictRetries = 50

// result is the outcome of one append.
type result struct {
	Index int64
	Err   error
	pid   int64 // shared mode: the entry's pending id, once recorded (its index is -1)
}

type request struct {
	body    []byte
	done    chan result
	lazy    bool // queued by addLazy: nobody is waiting on its commit
	written bool // written mode: see Options.Requests
	// Shared mode. intent: a forwarded request's decision, held by the
	// sequencer for its completion. A completion: the pending id of its
	// decision (0: none), a size of the log read before that decision was
	// recorded, and the type of the outcome entry made of it should the
	// decision have an entry of its own (see parsePending).
	intent       bool
	ref, refFrom int64
	outcome      string
}

// Log is the audit log of one server node. Several nodes may share one
// storage: a group commit that loses the race reloads and retries.
type Log struct {
	st      Storage
	signer  note.Signer
	origin  string
	vkey    string
	pmac    pendingMAC // seals and opens pending records
	opts    Options
	metrics *metrics

	reqs    chan *request
	stop    chan struct{} // closed by Close: committer drains and exits
	done    chan struct{} // committer exited
	pubStop chan struct{}
	pubDone chan struct{}

	closeMu sync.RWMutex // held for reading while sending on reqs
	closed  bool

	mu         sync.Mutex
	size       int64     // durable size as this node knows it
	root       tlog.Hash // tree hash at size
	commitErr  error     // last append failure, nil when healthy
	treeErr    error     // the stored tree does not extend the signed checkpoint (reload); sticky
	publishErr error     // last checkpoint failure
	published  int64     // largest size this node has published or seen published
	shut       bool      // Close finished
	// known is the largest tree this node stored or loaded, with its
	// root: a reloaded tree must extend it, also where no signature
	// covers it yet or the rows of the checkpoints that did are gone
	// (Size 0: none yet).
	known audit.TreeHead

	// owned by the committer goroutine (and Open before it starts)
	// (with a journal: of js.size, and guarded by js.mu)
	scratch  sync.Pool // *[]byte: encoding buffers of journaled appends
	frontier frontier  // stored hashes of the complete subtrees of size
	stale    bool      // reload size and frontier before the next commit

	js        jstate // journal mode (Options.Journal); js.j is nil without
	recovered int    // entries replayed from the journal by Open

	sh *sharedState // shared mode (Options.Shared); nil without

	aw awaits // entries that actions wrote themselves (pending.go)
}

// Open opens the log over st, signing checkpoints with signerKey (a note
// signer key from GenerateKey; its name is the checkpoint origin), and
// starts its committer and checkpoint publisher.
func Open(ctx context.Context, st Storage, signerKey string, opts Options) (*Log, error) {
	opts.defaults()
	signer, err := note.NewSigner(signerKey)
	if err != nil {
		return nil, fmt.Errorf("audit: reading signer key: %w", err)
	}
	vkey, err := audit.VerifierKeyFor(signerKey)
	if err != nil {
		return nil, err
	}
	pmac, err := newPendingMAC(signerKey)
	if err != nil {
		return nil, err
	}
	l := &Log{
		st:      st,
		signer:  signer,
		origin:  signer.Name(),
		vkey:    vkey,
		pmac:    pmac,
		opts:    opts,
		metrics: newMetrics(opts.Registerer),
		reqs:    make(chan *request, 4*opts.MaxBatch),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		pubStop: make(chan struct{}),
		pubDone: make(chan struct{}),
	}
	if opts.Shared {
		ss, ok := st.(sharedStorage)
		if !ok || opts.Journal != "" {
			return nil, fmt.Errorf("audit: a shared log needs a store that records pending entries, and no journal")
		}
		l.sh = &sharedState{st: ss, kick: make(chan struct{}, 1), done: make(chan struct{}),
			recent: map[int64]int64{}, older: map[int64]int64{}}
	}
	if err := l.reload(ctx); err != nil {
		return nil, fmt.Errorf("audit: opening log: %w", err)
	}
	l.aw.init()
	if l.sh != nil {
		// Sequence from the start if no other node does, so that a lone
		// node signs its first checkpoint in Open as it always did.
		l.sh.lastElect = time.Now()
		l.elect()
	}
	if opts.Journal != "" {
		if !journalSupported {
			return nil, fmt.Errorf("audit: journal %s: %w", opts.Journal, errNoJournal)
		}
		j, entries, err := openJournal(opts.Journal)
		if err != nil {
			return nil, err
		}
		l.js.j, l.js.kick = j, make(chan struct{}, 1)
		if err := l.replay(ctx, entries); err != nil {
			j.close()
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok && l.js.j != nil {
			l.js.j.close()
		}
		if !ok && l.sh != nil && l.sh.seq != nil {
			_ = l.sh.seq.Close()
		}
	}()
	cp, err := l.latestCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: opening log: %w", err)
	}
	l.published = -1
	if cp != nil {
		if cp.Size > l.Size() && l.sh != nil {
			// Another node's sequencer went on since the reload.
			if err := l.reload(ctx); err != nil {
				return nil, fmt.Errorf("audit: opening log: %w", err)
			}
		}
		if cp.Size > l.Size() {
			return nil, fmt.Errorf("audit: log has %d entries but a checkpoint for %d exists: entries lost", l.Size(), cp.Size)
		}
		l.published = cp.Size
	}
	if err := l.publish(ctx); err != nil {
		return nil, err
	}
	ok = true
	if l.js.j != nil {
		go l.journalLoop()
	} else {
		go l.commitLoop()
	}
	if l.sh != nil {
		go l.seqLoop()
	}
	go l.publishLoop()
	l.kickPending() // what actions recorded before a stop
	return l, nil
}

// JournalSupported reports whether Options.Journal can be used on this
// system (Linux). Elsewhere Open refuses it, and a server appends every
// entry to the store, as it does on PostgreSQL.
func JournalSupported() bool { return journalSupported }

// Origin is the checkpoint origin line (the signer key's name).
func (l *Log) Origin() string { return l.origin }

// VerifierKey returns the note verifier key for the log's checkpoints.
func (l *Log) VerifierKey() string { return l.vkey }

// Size returns the number of durable entries this node knows of.
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// Healthy returns nil when the last write to the store succeeded, or an
// error wrapping failclosed.ErrUnavailable (for /readyz). It recovers by itself once
// the store takes writes again.
func (l *Log) Healthy() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shut {
		return ErrClosed
	}
	if l.treeErr != nil {
		return l.treeErr
	}
	if l.commitErr != nil {
		return l.commitErr
	}
	return l.publishErr
}

// Add records ev and returns its Future at once; Future.Wait answers once
// the entry is as safe as the log's Options promise for ev's type (see the
// package comment): durable, or, for the request types (Options.Requests),
// written. If the entry cannot be made so, Wait's error wraps
// failclosed.ErrUnavailable and the caller must not perform the action it
// records. While the log is unhealthy, a request's entry is refused at once
// rather than tried. ctx bounds the queueing only; if Wait's ctx ends first,
// the entry may still be recorded.
func (l *Log) Add(ctx context.Context, ev audit.Event) Future {
	req := l.isRequest(ev.Type)
	written := req && !l.opts.DurableRequests
	if req && (l.js.j == nil || !written) {
		// A journaled written append checks the log's health itself
		// (admit).
		if err := l.Healthy(); err != nil {
			return answered(-1, err)
		}
	}
	return l.add(ctx, ev, written)
}

// isRequest reports whether typ is one of Options.Requests.
func (l *Log) isRequest(typ string) bool {
	for _, t := range l.opts.Requests {
		if t == typ {
			return true
		}
	}
	return false
}

// add queues ev, written (answered once a crash of this process can no
// longer lose it) or durable.
func (l *Log) add(ctx context.Context, ev audit.Event, written bool) Future {
	if l.js.j != nil {
		idx, ch, err := l.appendJournal(ev, false, !written)
		if err != nil || written {
			return answered(idx, err) // journaled: a crash can no longer lose it
		}
		return Future{ch: ch, typ: ev.Type}
	}
	// Shared mode: answered once pending (durable or written), with index
	// -1; the index is the sequencer's to give.
	r, err := l.submit(ctx, ev, false, written)
	if err != nil {
		return answered(-1, err)
	}
	return Future{ch: r.done, typ: ev.Type}
}

// addLazy queues ev, a record of what already happened (a gateway
// response), written, without waiting: the commit may linger up to 2 ms to
// share a transaction with an awaited entry.
func (l *Log) addLazy(ev audit.Event) Future {
	if l.js.j != nil {
		idx, _, err := l.appendJournal(ev, true, false)
		return answered(idx, err)
	}
	r, err := l.submit(context.Background(), ev, true, true)
	if err != nil {
		return answered(-1, err)
	}
	return Future{ch: r.done, typ: ev.Type}
}

// encodeEvent is audit.EncodeEvent into a new buffer.
func encodeEvent(ev audit.Event) ([]byte, error) {
	return audit.EncodeEvent(make([]byte, 0, 1024), &ev)
}

func (l *Log) submit(ctx context.Context, ev audit.Event, lazy, written bool) (*request, error) {
	body, err := encodeEvent(ev)
	if err != nil {
		return nil, err
	}
	r := &request{body: body, done: make(chan result, 1), lazy: lazy, written: written}
	if err := l.enqueue(ctx, ev.Type, r); err != nil {
		return nil, err
	}
	return r, nil
}

// enqueue hands r to the committer.
func (l *Log) enqueue(ctx context.Context, typ string, r *request) error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return fmt.Errorf("audit: appending %s entry: %w", typ, ErrClosed)
	}
	select {
	case l.reqs <- r:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: queueing %s entry: %w", typ, ctx.Err())
	}
}

// Close stops taking appends, commits everything queued, publishes a last
// checkpoint and stops the background work. It does not close the store.
func (l *Log) Close(ctx context.Context) error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return nil
	}
	l.closed = true
	l.closeMu.Unlock()
	close(l.stop)
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("audit: closing: %w", ctx.Err())
	}
	if l.js.j != nil {
		l.js.j.close()
	}
	if l.sh != nil {
		select {
		case <-l.sh.done:
		case <-ctx.Done():
			return fmt.Errorf("audit: closing: %w", ctx.Err())
		}
	}
	close(l.pubStop)
	select {
	case <-l.pubDone:
	case <-ctx.Done():
		return fmt.Errorf("audit: closing: %w", ctx.Err())
	}
	err := l.publish(ctx)
	l.mu.Lock()
	l.shut = true
	l.mu.Unlock()
	l.aw.closeAll()
	return err
}

func (l *Log) commitLoop() {
	defer close(l.done)
	probe := time.NewTicker(l.opts.CheckpointInterval)
	defer probe.Stop()
	batch := make([]*request, 0, l.opts.MaxBatch)
	lastBatch, lastCommit := 1, time.Duration(0)
	for {
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-probe.C:
			l.probe()
			if l.aw.sweepDue() {
				l.sequenceLocal()
			}
			continue
		case <-l.aw.kick:
			l.sequenceLocal()
			continue
		case <-l.stop:
			for {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					if len(batch) == l.opts.MaxBatch {
						l.commit(batch)
						batch = batch[:0]
					}
				default:
					if len(batch) > 0 {
						l.commit(batch)
					}
					return
				}
			}
		}
		// Writers released by the last commit tend to come straight back:
		// wait briefly for them too, so that concurrent writers share one
		// commit instead of alternating between two half-sized ones. A lone
		// writer (lastBatch 1) never waits.
		target := min(len(batch)+len(l.reqs)+lastBatch-1, l.opts.MaxBatch)
		var linger *time.Timer
	fill:
		for len(batch) < l.opts.MaxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
				continue
			default:
			}
			if len(batch) >= target {
				break
			}
			if linger == nil {
				linger = time.NewTimer(min(lastCommit/4, maxLinger))
			}
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			case <-linger.C:
				break fill
			}
		}
		if linger != nil {
			linger.Stop()
		}
		if allLazy(batch) {
			t := time.NewTimer(lazyLinger)
		lazy:
			for len(batch) < l.opts.MaxBatch {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					if !r.lazy {
						break lazy
					}
				case <-t.C:
					break lazy
				case <-l.stop:
					break lazy
				}
			}
			t.Stop()
		}
		began := time.Now()
		l.commit(batch)
		lastCommit = time.Since(began)
		lastBatch = len(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// commit makes batch durable in one transaction and answers every request.
func (l *Log) commit(batch []*request) {
	if l.sh != nil {
		l.commitPending(batch)
		return
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	var (
		start   int64
		entries [][]byte
		hashes  []tlog.Hash
		err     error
	)
	mode := store.AuditDurable
	if allWritten(batch) {
		mode = store.AuditWritten
	}
	for attempt := 0; ; attempt++ {
		if l.stale {
			if err = l.reload(ctx); err != nil {
				break
			}
		}
		start = l.Size()
		entries, hashes, err = l.build(ctx, start, batch)
		if err != nil {
			l.stale = true
			break
		}
		err = l.st.AppendAudit(ctx, start, entries, tlog.StoredHashCount(start), hashesOf(hashes), mode)
		if err == nil {
			break
		}
		l.stale = true
		if !isConflict(err) || attempt >= maxConflictRetries {
			break
		}
		l.metrics.conflicts.Inc()
	}
	if err != nil {
		l.failBatch(batch, err)
		return
	}
	newSize := start + int64(len(batch))
	l.advance(start, newSize, hashes)
	root, rerr := tlog.TreeHash(newSize, l.frontierReader())
	if rerr != nil { // cannot happen: the frontier is complete
		l.stale = true
	}
	l.stored(newSize, root, len(batch), began)
	for i, r := range batch {
		r.done <- result{Index: start + int64(i)}
	}
}

// stored records a store commit of n entries, begun at began, that took the
// log to size with tree hash root.
func (l *Log) stored(size int64, root tlog.Hash, n int, began time.Time) {
	l.mu.Lock()
	l.size, l.root = size, root
	l.known = audit.TreeHead{Size: size, Root: root}
	l.commitErr = nil
	l.mu.Unlock()
	l.metrics.appends.Add(float64(n))
	l.metrics.batchSize.Observe(float64(n))
	l.metrics.commitSecs.Observe(time.Since(began).Seconds())
	l.metrics.size.Set(float64(size))
}

// build stamps the batch with indexes from start and the commit time, and
// computes the stored hashes the new records add.
func (l *Log) build(ctx context.Context, start int64, batch []*request) ([][]byte, []tlog.Hash, error) {
	ts := audit.FormatTime(l.opts.Now())
	need := 0
	for _, r := range batch {
		need += len(r.body) + 48 + len(ts)
	}
	buf := make([]byte, 0, need)
	entries := make([][]byte, len(batch))
	for i, req := range batch {
		off := len(buf)
		buf = audit.AppendEntry(buf, start+int64(i), ts, req.body)
		entries[i] = buf[off:len(buf):len(buf)]
	}
	hashes, err := l.hashEntries(ctx, start, entries)
	if err != nil {
		return nil, nil, err
	}
	return entries, hashes, nil
}

// batchReader reads stored hashes from the ones being computed (*hashes,
// from firstHash on), then the frontier, then the store.
func (l *Log) batchReader(ctx context.Context, firstHash int64, hashes *[]tlog.Hash) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		var missing []int
		for i, x := range idx {
			if x >= firstHash && x < firstHash+int64(len(*hashes)) {
				out[i] = (*hashes)[x-firstHash]
			} else if h, ok := l.frontier.get(x); ok {
				out[i] = h
			} else {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 { // not expected: the frontier covers all appends
			q := make([]int64, len(missing))
			for j, i := range missing {
				q[j] = idx[i]
			}
			got, err := l.st.AuditHashes(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("reading stored hashes: %w", err)
			}
			for j, i := range missing {
				out[i] = got[j]
			}
		}
		return out, nil
	})
}

func hashesFrom(hs [][32]byte) []tlog.Hash {
	out := make([]tlog.Hash, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out
}

func hashesOf(hs []tlog.Hash) [][32]byte {
	out := make([][32]byte, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out
}

// frontierIndexes returns the stored-hash indexes of the complete subtrees
// that make up a tree of size n, left to right.
func frontierIndexes(n int64) []int64 { return appendFrontierIndexes(nil, n) }

// appendFrontierIndexes is frontierIndexes appending to dst.
func appendFrontierIndexes(dst []int64, n int64) []int64 {
	var lo int64
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			dst = append(dst, tlog.StoredHashIndex(level, lo>>level))
			lo += 1 << level
		}
	}
	return dst
}

// frontier is the stored hashes of the complete subtrees of a tree, at
// most 63, by stored-hash index. Slices, not a map: the journal advances
// it once per entry, under its lock, and a map's updates and iteration
// were a third of that.
type frontier struct {
	idx      []int64
	h        []tlog.Hash
	spareIdx []int64
	spareH   []tlog.Hash
}

func (f *frontier) get(x int64) (tlog.Hash, bool) {
	for i, y := range f.idx {
		if y == x {
			return f.h[i], true
		}
	}
	return tlog.Hash{}, false
}

// set makes the frontier idx with hashes h (copied).
func (f *frontier) set(idx []int64, h []tlog.Hash) {
	f.idx = append(f.idx[:0], idx...)
	f.h = append(f.h[:0], h...)
}

// advance moves the frontier from size start to newSize, given the stored
// hashes written for [start, newSize). A subtree root neither written now
// nor in the frontier before is left out, so that reading it fails.
func (l *Log) advance(start, newSize int64, hashes []tlog.Hash) {
	f := &l.frontier
	firstHash := tlog.StoredHashCount(start)
	all := appendFrontierIndexes(f.spareIdx[:0], newSize)
	idx, hs := all[:0], f.spareH[:0] // idx filters all in place
	for _, x := range all {
		if x >= firstHash {
			idx, hs = append(idx, x), append(hs, hashes[x-firstHash])
		} else if h, ok := f.get(x); ok {
			idx, hs = append(idx, x), append(hs, h)
		}
	}
	f.spareIdx, f.spareH = f.idx, f.h
	f.idx, f.h = idx, hs
}

func (l *Log) frontierReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			h, ok := l.frontier.get(x)
			if !ok {
				return nil, fmt.Errorf("audit: stored hash %d not in frontier", x)
			}
			out[i] = h
		}
		return out, nil
	})
}

// errRewritten marks a stored tree that does not extend the latest signed
// checkpoint: the database's entries and hashes were rewritten (or
// truncated) by someone without the signer key.
var errRewritten = errors.New("the stored log is not the one its signed checkpoints cover")

// latestCheckpoint returns the latest stored checkpoint, its signature
// checked (nil if there is none). The row's size must be its note's: a row
// filed under a larger size would hide the checkpoints after its note's.
func (l *Log) latestCheckpoint(ctx context.Context) (*audit.TreeHead, error) {
	rowSize, text, err := l.st.LatestAuditCheckpoint(ctx)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading latest checkpoint: %w", err)
	}
	size, root, err := audit.ParseCheckpoint(text, l.vkey)
	if err != nil {
		return nil, fmt.Errorf("latest stored checkpoint (size %d) does not verify with this key: %w", rowSize, err)
	}
	if size != rowSize {
		return nil, fmt.Errorf("%w: the latest checkpoint row is filed under size %d but its signed note is for %d", errRewritten, rowSize, size)
	}
	return &audit.TreeHead{Size: size, Root: root}, nil
}

// reload reads the size and the frontier hashes from the store, and checks
// that the tree they make extends the latest signed checkpoint: every
// checkpoint signed later is over that tree, so a history rewritten in the
// database with its hashes recomputed must not be loaded (a sticky
// unhealthy state, treeErr, until it passes).
func (l *Log) reload(ctx context.Context) error {
	// The checkpoint before the size: the log only grows, so the size is
	// never below it, even while another node appends and signs.
	cp, err := l.latestCheckpoint(ctx)
	if err != nil {
		return l.reloadFailed(err)
	}
	size, err := l.st.AuditSize(ctx)
	if err != nil {
		return fmt.Errorf("reading log size: %w", err)
	}
	idx := frontierIndexes(size)
	var hs []tlog.Hash
	if len(idx) > 0 {
		got, err := l.st.AuditHashes(ctx, idx)
		if isNotFound(err) {
			return l.reloadFailed(fmt.Errorf("%w: right-edge hashes of its %d entries are missing", errRewritten, size))
		}
		if err != nil {
			return fmt.Errorf("reading right-edge hashes of %d entries: %w", size, err)
		}
		if len(got) != len(idx) {
			return fmt.Errorf("reading right-edge hashes: got %d of %d", len(got), len(idx))
		}
		hs = hashesFrom(got)
	}
	root, err := tlog.TreeHash(size, tlog.HashReaderFunc(func(want []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(want))
		for i, x := range want {
			j := slices.Index(idx, x)
			if j < 0 {
				return nil, fmt.Errorf("audit: stored hash %d not in frontier", x)
			}
			out[i] = hs[j]
		}
		return out, nil
	}))
	if err != nil {
		return err
	}
	if err := l.extends(ctx, cp, "the signed checkpoint", size, root); err != nil {
		return l.reloadFailed(err)
	}
	// The tree this node stored itself may be past every checkpoint row
	// left in the store: its newest entries are signed only within the
	// checkpoint interval, and the rows of checkpoints it signed may have
	// been deleted by someone without the key. Verifiers may hold those,
	// so signing on over a tree that does not extend it would sign a
	// changed tail, or publish a fork.
	l.mu.Lock()
	known := l.known
	l.mu.Unlock()
	if known.Size > 0 && (known.Size != size || known.Root != root) {
		if err := l.extends(ctx, &known, "this node's own tree", size, root); err != nil {
			return l.reloadFailed(err)
		}
	}
	l.frontier.set(idx, hs)
	l.mu.Lock()
	l.size, l.root = size, root
	l.known = audit.TreeHead{Size: size, Root: root}
	l.treeErr = nil
	l.mu.Unlock()
	l.js.size, l.js.start = size, size
	l.metrics.size.Set(float64(size))
	l.stale = false
	return nil
}

// extends checks that the tree (size, root), read from the stored hashes,
// extends cp (what names it: the signed checkpoint, or this node's own
// tree): the same root at its size, else a consistency proof from the
// stored hashes (O(log size) of them).
func (l *Log) extends(ctx context.Context, cp *audit.TreeHead, what string, size int64, root tlog.Hash) error {
	if cp == nil || cp.Size == 0 {
		return nil // nothing signed to hold the tree to
	}
	if cp.Size > size {
		return fmt.Errorf("%w: it has %d entries but %s covers %d: entries lost", errRewritten, size, what, cp.Size)
	}
	if cp.Size == size {
		if root != cp.Root {
			return fmt.Errorf("%w: the tree of %d entries has another root than %s of that size (entries and hashes rewritten)", errRewritten, size, what)
		}
		return nil
	}
	proof, err := tlog.ProveTree(size, cp.Size, storeHashReader(ctx, l.st))
	if isNotFound(err) {
		return fmt.Errorf("%w: hashes proving the stored tree of %d entries consistent with %s of %d are missing", errRewritten, size, what, cp.Size)
	}
	if err != nil {
		return fmt.Errorf("proving the stored tree of %d entries consistent with %s of %d: %w", size, what, cp.Size, err)
	}
	if err := tlog.CheckTree(proof, size, root, cp.Size, cp.Root); err != nil {
		return fmt.Errorf("%w: the stored tree of %d entries does not extend %s of %d (entries or hashes before %d rewritten): %v",
			errRewritten, size, what, cp.Size, cp.Size, err)
	}
	return nil
}

// reloadFailed returns err, and when it shows a rewritten history makes
// the log unhealthy until a reload passes: nothing is signed or appended
// over it.
func (l *Log) reloadFailed(err error) error {
	if errors.Is(err, errRewritten) {
		l.mu.Lock()
		l.treeErr = fmt.Errorf("audit log %w: %w", failclosed.ErrUnavailable, err)
		l.mu.Unlock()
		l.metrics.treeErrors.Inc()
	}
	return err
}

// probe runs in the committer while the log is unhealthy: it reloads the
// state and writes a checkpoint (an idempotent write) to learn whether the
// store takes writes again, so that /readyz recovers without traffic.
func (l *Log) probe() {
	l.mu.Lock()
	bad := l.commitErr != nil
	l.mu.Unlock()
	if !bad {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	if l.js.j != nil {
		l.js.mu.Lock()
		queued := len(l.js.queue) > 0
		var err error
		if !queued {
			err = l.reload(ctx)
		}
		l.js.mu.Unlock()
		if queued {
			_ = l.integrate(false) // clears commitErr when the store takes it
			return
		}
		if err != nil {
			return
		}
	} else if l.sh != nil {
		// The tree is the sequencing loop's: learn whether the store
		// takes writes with one that changes nothing.
		if err := l.sh.st.Ping(ctx); err != nil {
			return
		}
		l.mu.Lock()
		l.commitErr = nil
		l.mu.Unlock()
		return
	} else if err := l.reload(ctx); err != nil {
		l.stale = true
		return
	}
	l.mu.Lock()
	size, root := l.size, l.root
	l.mu.Unlock()
	text, err := l.sign(size, root)
	if err == nil {
		err = l.st.PutAuditCheckpoint(ctx, size, text)
	}
	if err != nil {
		return
	}
	l.mu.Lock()
	l.commitErr = nil
	if size > l.published {
		l.published = size
	}
	l.mu.Unlock()
}

func (l *Log) publishLoop() {
	defer close(l.pubDone)
	t := time.NewTicker(l.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
			_ = l.publish(ctx) // recorded in publishErr and metrics
			cancel()
		case <-l.pubStop:
			return
		}
	}
}

// publish signs and stores a checkpoint for the current size if it is
// larger than the last one published.
func (l *Log) publish(ctx context.Context) error {
	if l.sh != nil && !l.sh.leader.Load() {
		// The sequencer's: only it knows the tree's root. A failure from
		// when this node was the sequencer is no longer its to report:
		// kept, it would hold the node unready (and its gateway refusing)
		// after the database came back and another node took over.
		l.mu.Lock()
		l.publishErr = nil
		l.mu.Unlock()
		return nil
	}
	l.mu.Lock()
	size, root, last := l.size, l.root, l.published
	l.mu.Unlock()
	if size <= last {
		return nil
	}
	text, err := l.sign(size, root)
	if err == nil {
		err = l.st.PutAuditCheckpoint(ctx, size, text)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.publishErr = fmt.Errorf("audit log %w: publishing checkpoint %d: %v", failclosed.ErrUnavailable, size, err)
		l.metrics.cpErrors.Inc()
		return l.publishErr
	}
	l.publishErr = nil
	if size > l.published {
		l.published = size
	}
	l.metrics.checkpoints.Inc()
	return nil
}

func (l *Log) sign(size int64, root tlog.Hash) ([]byte, error) {
	text, err := note.Sign(&note.Note{Text: string(audit.FormatCheckpoint(l.origin, size, root))}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("audit: signing checkpoint: %w", err)
	}
	return text, nil
}

// Checkpoint returns the latest signed checkpoint in the store.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	_, text, err := l.st.LatestAuditCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: reading latest checkpoint: %w", err)
	}
	return text, nil
}

// CheckpointAt returns the signed checkpoint stored for size, if any.
func (l *Log) CheckpointAt(ctx context.Context, size int64) ([]byte, error) {
	text, err := l.st.AuditCheckpoint(ctx, size)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: no checkpoint for size %d", audit.ErrRange, size)
		}
		return nil, fmt.Errorf("audit: reading checkpoint %d: %w", size, err)
	}
	return text, nil
}

// Sync signs and stores a checkpoint covering every entry durable so far
// now, without waiting for the publisher (Wait already waits for
// durability).
func (l *Log) Sync(ctx context.Context) error {
	return l.publish(ctx)
}

func allWritten(batch []*request) bool {
	for _, r := range batch {
		if !r.written {
			return false
		}
	}
	return true
}

func allLazy(batch []*request) bool {
	for _, r := range batch {
		if !r.lazy {
			return false
		}
	}
	return len(batch) > 0
}
