package auditlog

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// The journal is the Log's write-ahead file for written-mode entries (the
// gateway's). Writing a record there is a copy into a shared memory
// mapping of the file, that is into the page cache: from then a kill -9 of
// the process cannot lose it, and no system call was made. The Log folds
// journaled entries into the store in larger, less frequent transactions,
// copies new records to a durable mirror file within syncDelay (a power
// loss loses at most that much), and a restart folds in whatever a crash
// left behind. The store
// stays the log: the journal only ever holds entries the store may not
// have yet, and it is emptied once the store has them durably.
//
// A file is a header, journalMagic and a generation (8 bytes, big-endian),
// then records. A record is its payload's length (4 bytes, big-endian),
// the CRC-32C of the generation and the payload (4 bytes), and the payload,
// one of:
//
//   - an entry, which starts with its own index ({"index":N,…);
//   - 'I', an intent id (8 bytes), the time, '\n' and an event: a gateway
//     request about to be forwarded, whose entry Finish makes later;
//   - 'E', an intent id and an entry: the entry that completes that intent;
//   - 'P', a pending id (8 bytes) and an entry: the entry made from that
//     pending record of the store (written by an action in its own
//     transaction, see pending.go), which the fold deletes;
//   - 'R', an intent id and an entry: as 'E', the entry a replay made of
//     an intent no entry completed, written before the store has it
//     (appendReplayed). Its index is past every entry that replay kept:
//     a record of another kind at or past it was dropped, and stays so.
//
// Reading stops at the first record that is cut short, is zero (the unused
// rest of the file) or does not match its CRC: a kill in the middle of a
// copy or a power loss can leave such a tail, and nothing after it was
// acknowledged. Emptying a file writes a new generation into its header,
// which invalidates every record after it at once. A file without the
// header is one of an earlier version (records whose CRC covers the
// payload only): it is read, replayed and rewritten.
//
// Files are allocated at their full size (fallocate) before they are
// mapped where the disk has room, so that copying a record in never needs
// a block; where it has not, a copy that finds no room is an error, not a
// crash (copyAt).

const (
	journalHeader = 8 // a record's length and CRC
	// maxJournalEntry bounds one record, so that a corrupt length cannot
	// make the reader allocate without end.
	maxJournalEntry = 16 << 20
	// journalResetSize is the size past which the Log moves appenders to
	// the other file and empties the first after its next durable commit.
	journalResetSize = 4 << 20
	// journalCapacity is each file's size. Past journalResetSize it is
	// headroom for while the store is slow: once the active file is full,
	// requests are refused (503) rather than forwarded unrecorded.
	journalCapacity = 32 << 20
	// fileHeader is the magic and the generation.
	fileHeader   = 16
	journalMagic = "MFYJRNL2"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errNoJournal: this system has no journal (journal_other.go).
var errNoJournal = errors.New("the write-ahead journal is only available on Linux")

// errJournalFull: the store has not kept up.
var errJournalFull = errors.New("the audit journal is full: the store is not keeping up")

// journal is two files, path and path+".1". Appenders write one; when it
// passes resetSize they move to the other, and the first is emptied once
// the store has everything in it durably, without holding up the
// appenders (emptying a single file meant a durable store commit with every
// appender waiting). Running requests' intents are written again to the
// new file first. Entries are ordered by their index, not by file.
//
// Each file has a durable mirror, its name with ".sync" added: the
// committer copies the new bytes of the mapping there with one pwrite and
// fdatasyncs the mirror, not the mapped file. A mapped file's fdatasync
// cost ~4 µs of CPU per request at saturation (its writeback write-protects
// the mapped pages again, and the next copies fault); a plain file's is a
// third of that. The mapped file is synced only for its header, when it is
// emptied. A replay reads both; records they share count once.
type journal struct {
	path   string
	f      [2]*os.File // mapped
	d      [2]*os.File // their durable mirrors
	m      [2][]byte   // the mappings, once prepared
	gen    [2]uint64   // each file's generation
	genb   [2][8]byte
	size   [2]int64 // the end of the header and whole records
	synced [2]int64 // how much of each file its mirror holds durably
	active int      // the file appenders write
	// How far each file's mapping was prefaulted (toPrefault), and whether
	// the kernel can.
	ahead      [2]int64
	noPrefault bool
	// Where the records of file 1's mirror end at Open, and its
	// generation (nil: no header): a replay appends its completions there
	// (appendReplayed).
	tailEnd int
	tailGen []byte
}

// prefaultAhead is how much of the active file past its last record the
// committer keeps present and writable. The first copy into each page of
// the shared mapping otherwise takes a page fault (7-15 µs each on ext4,
// measured under load), again once the kernel has written the page back:
// one request in three or four took one before its upstream saw a byte or
// after its answer was written. Prefaulting moves that work to the
// committer, off the requests' path; it changes no byte of the file.
const prefaultAhead = 256 << 10

// toPrefault is the part of the active file's mapping to prefault now
// (page-aligned), or nil when enough of it is. js.mu is held; the caller
// prefaults after releasing it (appenders go on copying meanwhile).
func (j *journal) toPrefault() []byte {
	if j.noPrefault {
		return nil
	}
	i := j.active
	end := j.size[i]
	lo := j.ahead[i]
	if lo < end || lo > end+2*prefaultAhead {
		lo = end // appenders overtook it, or the file was emptied since
	} else if lo-end > prefaultAhead*3/4 {
		return nil // a quarter of the window used at most: later, in one call
	}
	lo &^= int64(os.Getpagesize()) - 1
	hi := min(end+prefaultAhead, int64(len(j.m[i])))
	if hi <= lo {
		return nil
	}
	j.ahead[i] = hi
	return j.m[i][lo:hi]
}

// openJournal opens (creating) the journal at path, locked against a second
// process, and returns the records its files hold. It changes nothing in
// them: prepare does, once the caller has stored what they hold.
func openJournal(path string) (*journal, [][]byte, error) {
	j := &journal{path: path}
	var all [][]byte
	for i, p := range [2]string{path, path + ".1"} {
		for k, name := range [2]string{p, p + ".sync"} {
			f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				j.close()
				return nil, nil, fmt.Errorf("audit: opening journal: %w", err)
			}
			if k == 0 {
				j.f[i] = f
			} else {
				j.d[i] = f
			}
			if i == 0 && k == 0 {
				if err := lockFile(f); err != nil {
					j.close()
					return nil, nil, fmt.Errorf("audit: journal %s is in use by another process: %w", path, err)
				}
			}
			data, err := io.ReadAll(f)
			if err != nil {
				j.close()
				return nil, nil, fmt.Errorf("audit: reading journal %s: %w", name, err)
			}
			recs, gen, end := readJournal(data)
			j.gen[i] = max(j.gen[i], gen)
			if i == 1 && k == 1 {
				j.tailEnd = end
				if gen > 0 {
					j.tailGen = genBytes(gen)
				}
			}
			all = append(all, recs...)
		}
	}
	return j, all, nil
}

// readJournal reads the whole, valid records of a file's content and
// returns them, the file's generation, and where its records end.
func readJournal(data []byte) ([][]byte, uint64, int) {
	if len(data) >= fileHeader && string(data[:len(journalMagic)]) == journalMagic {
		gen := binary.BigEndian.Uint64(data[len(journalMagic):fileHeader])
		recs, n := readRecords(data[fileHeader:], genBytes(gen))
		return recs, gen, fileHeader + n
	}
	recs, n := readRecords(data, nil) // an earlier version's file
	return recs, 0, n
}

func genBytes(gen uint64) []byte { return binary.BigEndian.AppendUint64(nil, gen) }

// readRecords reads records up to the first invalid one and returns them
// (sharing data) with the bytes they take. Their CRCs cover gen first.
func readRecords(data, gen []byte) ([][]byte, int) {
	var recs [][]byte
	off := 0
	for len(data)-off >= journalHeader {
		n := binary.BigEndian.Uint32(data[off:])
		if n == 0 || n > maxJournalEntry || int64(n) > int64(len(data)-off-journalHeader) {
			break
		}
		e := data[off+journalHeader : off+journalHeader+int(n)]
		if recordCRC(gen, e) != binary.BigEndian.Uint32(data[off+4:]) || !validRecord(e) {
			break
		}
		recs = append(recs, e)
		off += journalHeader + int(n)
	}
	return recs, off
}

func recordCRC(gen, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(gen, castagnoli), castagnoli, payload)
}

// appendRecordHeader appends the header of payload e's record (its length
// and CRC), in a file of generation gen (nil: an earlier version's file),
// to b: the payload follows it.
func appendRecordHeader(b, gen, e []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
	return binary.BigEndian.AppendUint32(b, recordCRC(gen, e))
}

// appendReplayed appends the records recs to file 1's mirror, after the
// records it held at Open, durably, and ends them with a zero length. A
// replay writes there the entries it makes of unfinished intents before
// the store has them: a crash after the store took them, before prepare
// emptied every file, then finds each intent completed, and does not
// record its request again. prepare empties that mirror last.
func (j *journal) appendReplayed(recs [][]byte) error {
	var b []byte
	for _, r := range recs {
		b = append(appendRecordHeader(b, j.tailGen, r), r...)
	}
	b = append(b, make([]byte, journalHeader)...)
	if _, err := j.d[1].WriteAt(b, int64(j.tailEnd)); err != nil {
		return fmt.Errorf("audit: writing journal mirror: %w", err)
	}
	if err := datasync(j.d[1]); err != nil {
		return fmt.Errorf("audit: syncing journal mirror: %w", err)
	}
	j.tailEnd += len(b) - journalHeader
	return nil
}

// prepare makes both files (and their mirrors) empty journal files of
// capacity bytes, the files mapped; what they held must be stored durably.
// File 1's mirror goes last (appendReplayed).
// A new generation in each header keeps their old records from ever being
// read again. Files already of that size are kept as they are: their
// blocks are written, so that copying records in changes no file system
// metadata.
func (j *journal) prepare(capacity int64) error {
	next := max(j.gen[0], j.gen[1])
	for i := range j.f {
		for _, f := range [2]*os.File{j.f[i], j.d[i]} {
			if err := allocate(f, capacity); err != nil {
				return fmt.Errorf("audit: allocating %d bytes for the journal %s: %w", capacity, f.Name(), err)
			}
		}
		m, err := mapFile(j.f[i], capacity)
		if err != nil {
			return fmt.Errorf("audit: mapping the journal: %w", err)
		}
		j.m[i] = m
		next++
		if err := j.setGen(i, next); err != nil {
			return err
		}
	}
	j.active = 0
	return nil
}

// allocate makes f size bytes long, unless it is, and gives it that much
// disk if it can (fallocate), so that copying a record in never needs a
// block. Where the disk is short or the file system has no fallocate the
// file stays sparse: a copy into the mapping that finds no room then
// faults, and copyAt turns the fault into an error (the log turns
// unhealthy, requests get 503), as a failed write(2) would.
func allocate(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == size {
		return nil
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return reserveBlocks(f, size)
}

// setGen writes a header of generation gen into file i and its mirror,
// durably: the file is then empty, and its emptied records must not come
// back after a power loss, or a replay would record a finished request
// again.
func (j *journal) setGen(i int, gen uint64) error {
	var h [fileHeader]byte
	copy(h[:], journalMagic)
	binary.BigEndian.PutUint64(h[len(journalMagic):], gen)
	if err := j.copyAt(i, 0, h[:], nil); err != nil {
		return err
	}
	// The header's page only: the records after it are of the old
	// generation, whether on disk yet or not.
	if err := syncMapped(j.m[i][:fileHeader]); err != nil {
		return fmt.Errorf("audit: syncing journal header: %w", err)
	}
	if _, err := j.d[i].WriteAt(h[:], 0); err != nil {
		return fmt.Errorf("audit: writing journal mirror: %w", err)
	}
	if err := datasync(j.d[i]); err != nil {
		return fmt.Errorf("audit: syncing journal mirror: %w", err)
	}
	j.gen[i], j.size[i], j.synced[i] = gen, fileHeader, fileHeader
	binary.BigEndian.PutUint64(j.genb[i][:], gen)
	return nil
}

// copyAt copies a and b into file i's mapping at off. A fault (an I/O
// error on the file's disk) is returned as an error, not a crash.
func (j *journal) copyAt(i int, off int64, a, b []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = fmt.Errorf("audit: writing journal (a fault, as when its disk is full): %v", p)
		}
	}()
	copy(j.m[i][off+int64(copy(j.m[i][off:], a)):], b)
	return nil
}

// free is the room left in the active file.
func (j *journal) free() int64 { return int64(len(j.m[j.active])) - j.size[j.active] }

// used is the bytes of records in file i.
func (j *journal) used(i int) int64 { return j.size[i] - fileHeader }

// write appends the record of payload p to the active file; the caller
// has checked that it fits.
func (j *journal) write(p []byte) error {
	i := j.active
	var h [journalHeader]byte
	if err := j.copyAt(i, j.size[i], appendRecordHeader(h[:0], j.genb[i][:], p), p); err != nil {
		return err
	}
	j.size[i] += journalHeader + int64(len(p))
	return nil
}

// Record kinds other than a plain entry, and the bytes before their body.
const (
	recIntent   = 'I'
	recComplete = 'E'
	recPending  = 'P'
	recReplayed = 'R'
	recPrefix   = 9 // kind and intent (or pending) id
)

// validRecord tells whether a payload is one of the record kinds.
func validRecord(p []byte) bool {
	if len(p) > 0 && (p[0] == recIntent || p[0] == recComplete || p[0] == recPending || p[0] == recReplayed) {
		if len(p) <= recPrefix {
			return false
		}
		if p[0] != recIntent {
			return audit.EntryIndex(p[recPrefix:]) >= 0
		}
		return bytes.IndexByte(p[recPrefix:], '\n') > 0
	}
	return audit.EntryIndex(p) >= 0
}

// journalContents is what a journal holds, parsed.
type journalContents struct {
	entries  [][]byte // in index order
	intents  []intentRec
	complete map[int64]uint64 // entry index -> the intent it completes
	pids     map[int64]int64  // entry index -> the pending record it was made from
}

type intentRec struct {
	id   uint64
	ts   string
	body []byte
}

// parseRecords sorts a journal's payloads into entries and intents.
// Entries at or past the first one an earlier replay made are that
// replay's only: it dropped the others (past a gap).
func parseRecords(recs [][]byte) journalContents {
	c := journalContents{complete: map[int64]uint64{}, pids: map[int64]int64{}}
	seen := map[uint64]bool{}
	made := int64(-1)
	for _, p := range recs {
		if p[0] == recReplayed {
			if i := audit.EntryIndex(p[recPrefix:]); made < 0 || i < made {
				made = i
			}
		}
	}
	for _, p := range recs {
		if made >= 0 && p[0] != recIntent && p[0] != recReplayed {
			e := p
			if p[0] == recComplete || p[0] == recPending {
				e = p[recPrefix:]
			}
			if audit.EntryIndex(e) >= made {
				continue
			}
		}
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
		case recComplete, recReplayed:
			c.complete[audit.EntryIndex(p[recPrefix:])] = binary.BigEndian.Uint64(p[1:recPrefix])
			c.entries = append(c.entries, p[recPrefix:])
		case recPending:
			c.pids[audit.EntryIndex(p[recPrefix:])] = int64(binary.BigEndian.Uint64(p[1:recPrefix]))
			c.entries = append(c.entries, p[recPrefix:])
		default:
			c.entries = append(c.entries, p)
		}
	}
	slices.SortStableFunc(c.entries, func(a, b []byte) int { return cmp.Compare(audit.EntryIndex(a), audit.EntryIndex(b)) })
	slices.SortFunc(c.intents, func(a, b intentRec) int { return cmp.Compare(a.id, b.id) })
	return c
}

// reset empties both files; the store must hold every entry durably.
// The active one goes last: it holds the completions materialize wrote,
// which must outlive every copy of their intents.
func (j *journal) reset() error {
	next := max(j.gen[0], j.gen[1])
	for _, i := range [2]int{j.active ^ 1, j.active} {
		next++
		if err := j.setGen(i, next); err != nil {
			return err
		}
	}
	j.active = 0
	return nil
}

// empty empties file i, durably.
func (j *journal) empty(i int) error {
	return j.setGen(i, max(j.gen[0], j.gen[1])+1)
}

// sync makes the records of file i up to end durable: it copies what its
// mirror lacks there and fdatasyncs the mirror. Only the committer calls
// it; end was read under the journal's lock, and the bytes before it do
// not change.
func (j *journal) sync(i int, end int64) error {
	if end <= j.synced[i] {
		return nil
	}
	if _, err := j.d[i].WriteAt(j.m[i][j.synced[i]:end], j.synced[i]); err != nil {
		return fmt.Errorf("audit: writing journal mirror: %w", err)
	}
	if err := datasync(j.d[i]); err != nil {
		return fmt.Errorf("audit: syncing journal mirror: %w", err)
	}
	j.synced[i] = end
	return nil
}

func (j *journal) close() error {
	var err error
	for i, f := range j.f {
		if j.m[i] != nil {
			err = errors.Join(err, unmapFile(j.m[i]))
			j.m[i] = nil
		}
		if f != nil {
			err = errors.Join(err, f.Close())
		}
		if j.d[i] != nil {
			err = errors.Join(err, j.d[i].Close())
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

// completionSlack is what a request's one entry may add to its intent's
// event (status, bytes, duration, failure, the record's prefix): Begin
// keeps that much room for it in the journal, so that a request admitted
// always gets its entry journaled, however full the journal gets.
const completionSlack = 512

// jstate is the Log's journal-mode state, guarded by its mutex: appenders
// journal under it, the committer folds the queue into the store.
type jstate struct {
	mu          sync.Mutex
	j           *journal
	size        int64              // entries journaled or stored: the next index
	start       int64              // index of queue[0]
	queue       [][]byte           // journaled entries not yet in the store; the committer hashes them
	waiters     []waiter           // durable appends waiting for the store
	old         int                // the journal file waiting to be emptied, or -1
	intents     map[uint64]*Intent // begun, in the journal, not finished
	reserved    int64              // room kept for the intents' entries
	resetSize   int64              // journalResetSize; tests lower it
	nextIntent  uint64
	unsynced    bool      // journal writes since its last fdatasync
	integrateBy time.Time // when the queue must reach the store
	syncBy      time.Time // when the journal must be synced
	kick        chan struct{}
	// Entries made from the store's pending records (pending.go): the
	// record of each queued one, by index, and the last record journaled.
	pids    map[int64]int64
	lastPID int64
}

// waiter is a durable entry waiting to reach the store.
type waiter struct {
	index int64
	done  chan result
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
		idx := audit.EntryIndex(e)
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
	var made [][]byte // the records of the entries made of intents
	for _, in := range c.intents {
		if !complete[in.id] {
			rec := make([]byte, recPrefix, recPrefix+len(in.ts)+len(in.body)+48)
			rec[0] = recReplayed
			binary.BigEndian.PutUint64(rec[1:recPrefix], in.id)
			rec = audit.AppendEntry(rec, next, in.ts, in.body)
			made = append(made, rec)
			todo = append(todo, rec[recPrefix:])
			next++
		}
	}
	if len(made) > 0 {
		if err := l.js.j.appendReplayed(made); err != nil {
			return fmt.Errorf("audit: replaying journal: %w", err)
		}
	}
	if len(todo) > 0 {
		start := l.size
		hashes, err := l.hashEntries(ctx, start, todo)
		if err != nil {
			return fmt.Errorf("audit: replaying journal: %w", err)
		}
		write := func() error {
			return l.st.AppendAudit(ctx, start, todo, tlog.StoredHashCount(start), hashesOf(hashes), store.AuditDurable)
		}
		if pids := replayedPIDs(c.pids, start, len(todo)); pids != nil {
			ps, ok := l.st.(pendingFolder)
			if !ok {
				return fmt.Errorf("audit: replaying journal: entries of pending records, and a store that has none")
			}
			write = func() error {
				return ps.AppendAuditFrom(ctx, start, todo, pids, tlog.StoredHashCount(start), hashesOf(hashes), store.AuditDurable)
			}
		}
		if err := write(); err != nil {
			return fmt.Errorf("audit: replaying %d journaled entries at %d: %w", len(todo), start, err)
		}
		if err := l.reload(ctx); err != nil {
			return fmt.Errorf("audit: after replaying journal: %w", err)
		}
		l.recovered = len(todo)
	}
	l.js.size, l.js.start = l.size, l.size
	l.js.pids = map[int64]int64{}
	l.js.intents = map[uint64]*Intent{}
	l.js.resetSize = journalResetSize
	l.js.old = -1
	capacity := l.opts.journalCapacity
	if capacity <= 0 {
		capacity = journalCapacity
	}
	return l.js.j.prepare(capacity)
}

// Recovered returns how many entries Open folded in from the journal that
// a crash had left out of the store.
func (l *Log) Recovered() int { return l.recovered }

// appendJournal stamps ev with the next index and copies its record into
// the journal, in the caller's goroutine: from then a kill -9 cannot lose
// it. A durable append also gets a channel answered once the store has the
// entry durably. A lazy entry (a record of what already happened) is taken
// while the log is unhealthy; others are not.
func (l *Log) appendJournal(ev audit.Event, lazy, durable bool) (int64, chan result, error) {
	return l.appendJournalFor(ev, nil, "", lazy, durable)
}

// appendJournalFor is appendJournal; with in set, ev completes that intent
// (a lazy append): while in is pending its record says so, and once in has
// an entry of its own, Outcome(ev, outcomeType, that entry's index) is
// appended instead.
func (l *Log) appendJournalFor(ev audit.Event, in *Intent, outcomeType string, lazy, durable bool) (int64, chan result, error) {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	scratch, body, now, err := l.admit(&ev, lazy)
	if err != nil {
		return -1, nil, err
	}
	defer l.scratch.Put(scratch) // body is copied into rec below
	js := &l.js
	js.mu.Lock()
	defer js.mu.Unlock()
	prefix := 0
	if in != nil {
		if _, ok := js.intents[in.id]; ok {
			// Its room, kept since Begin, is this record's.
			delete(js.intents, in.id)
			js.reserved -= in.reserve
			prefix = recPrefix
		} else if body, err = encodeEvent(audit.Outcome(ev, outcomeType, in.index)); err != nil {
			return -1, nil, err
		}
	}
	idx := js.size
	rec := make([]byte, prefix, prefix+len(body)+48+maxTimeLen)
	if prefix > 0 {
		rec[0] = recComplete
		binary.BigEndian.PutUint64(rec[1:recPrefix], in.id)
	}
	rec = audit.AppendEntryAt(rec, idx, now, body)
	entry := rec[prefix:]
	if err := l.journalWrite(rec, 0); err != nil {
		if prefix > 0 {
			// Still an intent: a restart or Close records its decision.
			js.intents[in.id] = in
			js.reserved += in.reserve
		}
		return -1, nil, fmt.Errorf("audit log %w: journaling %s entry: %w", failclosed.ErrUnavailable, ev.Type, err)
	}
	js.size++
	kick := false
	if len(js.queue) == 0 {
		js.integrateBy = time.Now().Add(integrateDelay)
		kick = true
	}
	js.queue = append(js.queue, entry)
	var done chan result
	if durable {
		done = make(chan result, 1)
		js.waiters = append(js.waiters, waiter{index: idx, done: done})
		kick = true
	}
	if kick {
		js.kickLoop()
	}
	return idx, done, nil
}

// journalWrite copies record payload p into the active journal file if it
// fits with room to spare for the running requests' entries and keep more,
// and has it synced within syncDelay; js.mu is held. A failed copy makes
// the log unhealthy.
func (l *Log) journalWrite(p []byte, keep int64) error {
	if err := l.journalCopy(p, keep); err != nil {
		return err
	}
	if js := &l.js; !js.unsynced {
		js.unsynced, js.syncBy = true, time.Now().Add(syncDelay)
		js.kickLoop()
	}
	return nil
}

// journalCopy is journalWrite for a record whose content is durable
// elsewhere already (a pending record's, in the store): it sets no sync
// deadline, and the next sync covers it. Losing it to a power cut loses
// nothing: the store's record stays pending, its fold is lost with it (the
// store's WAL is durable in order), and it is sequenced again at the same
// index (a journal sync covers every record before the one it is for).
func (l *Log) journalCopy(p []byte, keep int64) error {
	js := &l.js
	if int64(journalHeader+len(p))+keep > js.j.free()-js.reserved {
		l.metrics.appendErrors.Inc()
		js.kickLoop() // to switch files, if the other one is free
		return errJournalFull
	}
	if err := js.j.write(p); err != nil {
		l.mu.Lock()
		l.commitErr = fmt.Errorf("audit log %w: %v", failclosed.ErrUnavailable, err)
		l.mu.Unlock()
		l.metrics.appendErrors.Inc()
		return err
	}
	return nil
}

// maxTimeLen is the longest entry time audit.AppendTime writes.
const maxTimeLen = len("2006-01-02T15:04:05.999999999Z")

// admit encodes ev and stamps its time if the log takes it: not closed,
// and healthy unless lazy (a record of what already happened). The caller
// holds l.closeMu for reading until the record is journaled.
// The body is in (or, when it outgrew it, beside) scratch, a buffer the
// caller puts back into l.scratch once it has copied body into its
// record: the pool's own pointer, so that putting it back allocates
// nothing.
func (l *Log) admit(ev *audit.Event, lazy bool) (scratch *[]byte, body []byte, now time.Time, err error) {
	if l.closed {
		return nil, nil, now, fmt.Errorf("audit: appending %s entry: %w", ev.Type, ErrClosed)
	}
	if !lazy {
		if err := l.Healthy(); err != nil {
			return nil, nil, now, err
		}
	}
	scratch, _ = l.scratch.Get().(*[]byte)
	if scratch == nil {
		scratch = new([]byte)
		*scratch = make([]byte, 0, 2048)
	}
	body, err = audit.EncodeEvent(*scratch, ev)
	if err != nil {
		l.scratch.Put(scratch)
		return nil, nil, now, err
	}
	return scratch, body, l.opts.Now(), nil
}

func (js *jstate) kickLoop() {
	select {
	case js.kick <- struct{}{}:
	default:
	}
}

// Intent is a forwarded request's decision, recorded by Begin; Finish
// completes it. Its Future answers as Add's does for the request's type;
// its index is -1 while the decision has no entry of its own (a journal
// intent, or a pending record in shared mode).
type Intent struct {
	Future
	fromFuture bool // the decision's index and pending id come with Future

	id      uint64
	body    []byte
	rec     []byte // its journal record: recIntent, id, time, "\n", body
	index   int64  // the decision's own entry, or -1 while only an intent
	reserve int64  // journal room kept for its entry
	// Shared mode: the decision's pending id (its index is the
	// sequencer's to give) and the log's size before it was recorded.
	pid, from int64
}

// time is the decision's entry time, as its journal record holds it.
func (in *Intent) time() string { return string(in.rec[recPrefix : len(in.rec)-len(in.body)-1]) }

// Begin records ev, the decision to forward a request (one of
// Options.Requests), and returns the Intent that Finish completes once the
// request is done; wait for it (Intent.Wait) before forwarding. With a
// journal, in written mode, it writes an intent record and no entry, and is
// answered at once: Finish makes the request's one entry, and a restart
// after a crash makes one from the intent alone. In shared mode, written,
// it records a pending intent, which the sequencer holds for Finish's
// completion to make the request's one entry (see shared.go). Otherwise
// ev becomes an entry of its own (with DurableRequests, a durable one) and
// Finish adds a second one for the outcome. While the log is unhealthy it
// is refused at once.
func (l *Log) Begin(ctx context.Context, ev audit.Event) *Intent {
	written := !l.opts.DurableRequests
	if l.js.j == nil || !written {
		if err := l.Healthy(); err != nil {
			return &Intent{Future: answered(-1, err)}
		}
	}
	if !written {
		return &Intent{Future: l.add(ctx, ev, false), fromFuture: true}
	}
	if l.sh != nil {
		// Durable once pending. Nobody waits for the decision's index:
		// the outcome names the decision's pending id and the sequencer
		// writes the index in (sequence), so that a node never reads the
		// log to learn its requests' indexes.
		body, err := encodeEvent(ev)
		if err != nil {
			return &Intent{Future: answered(-1, err)}
		}
		from := l.Size()
		r := &request{body: body, done: make(chan result, 1), written: true, intent: true}
		if err := l.enqueue(ctx, ev.Type, r); err != nil {
			return &Intent{Future: answered(-1, err)}
		}
		return &Intent{Future: Future{ch: r.done, typ: ev.Type}, fromFuture: true, from: from}
	}
	if l.js.j == nil {
		return &Intent{Future: l.add(ctx, ev, true), fromFuture: true}
	}
	in, err := l.beginJournal(ev)
	if err != nil {
		return &Intent{Future: answered(-1, err)}
	}
	return in
}

// beginJournal writes ev's intent record into the journal.
func (l *Log) beginJournal(ev audit.Event) (*Intent, error) {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	scratch, body, now, err := l.admit(&ev, false)
	if err != nil {
		return nil, err
	}
	rec := make([]byte, recPrefix, recPrefix+maxTimeLen+1+len(body))
	rec[0] = recIntent
	rec = append(append(audit.AppendTime(rec, now), '\n'), body...)
	l.scratch.Put(scratch)
	in := &Intent{Future: answered(-1, nil), body: rec[len(rec)-len(body):], rec: rec, index: -1, reserve: int64(len(body) + completionSlack)}
	js := &l.js
	js.mu.Lock()
	defer js.mu.Unlock()
	js.nextIntent++
	in.id = js.nextIntent
	binary.BigEndian.PutUint64(rec[1:recPrefix], in.id)
	if err := l.journalWrite(rec, in.reserve); err != nil {
		return nil, fmt.Errorf("audit log %w: journaling %s decision: %w", failclosed.ErrUnavailable, ev.Type, err)
	}
	js.reserved += in.reserve
	js.intents[in.id] = in
	return in, nil
}

// Finish records the outcome of in, an Intent whose Wait succeeded,
// without waiting. While in is an intent in the journal, whole (the
// decision with its outcome) becomes the request's one entry; otherwise
// (no journal, or the intent was turned into an entry of its own when the
// journal was emptied) audit.Outcome(whole, outcomeType, i) is added, i
// being the decision's entry.
func (l *Log) Finish(in *Intent, whole audit.Event, outcomeType string) {
	if in.fromFuture {
		r := in.answer()
		if r.Err != nil {
			return // the request was refused: nothing to complete
		}
		in.index, in.pid, in.fromFuture = r.Index, r.pid, false
	}
	if in.pid > 0 {
		// Not awaited, as below. The sequencer makes the request's one
		// entry of whole if it still holds the decision, else the outcome
		// entry naming the decision's (sequence).
		body, err := encodeEvent(whole)
		if err != nil {
			return // cannot happen: the decision's own event encoded
		}
		r := &request{body: body, done: make(chan result, 1), lazy: true, written: true, ref: in.pid, refFrom: in.from, outcome: outcomeType}
		_ = l.enqueue(context.Background(), outcomeType, r) // closed: as an append after Close
		return
	}
	if l.js.j == nil {
		l.addLazy(audit.Outcome(whole, outcomeType, in.index))
		return
	}
	// Not waited for: a failure marks the log unhealthy and counts in
	// mayfly_audit_append_errors_total.
	_, _, _ = l.appendJournalFor(whole, in, outcomeType, true, false)
}

// outcomeIndexSuffix ends an outcome's body recorded before its
// decision's index is known (shared mode): Outcome(…, -1). The detail is
// the body's last field and request_index its last key (keys are sorted).
const outcomeIndexSuffix = `"request_index":-1}}`

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
			if l.aw.sweepDue() {
				l.aw.due.Store(true)
			}
		case <-l.stop:
			_ = l.integrate(true) // on failure the journal keeps them for the next Open
			return
		}
		if l.aw.due.Swap(false) {
			l.sequenceJournal()
		}
		js.mu.Lock()
		now := time.Now()
		syncNow := js.unsynced && !now.Before(js.syncBy)
		synced := js.j.active
		syncEnd := js.j.size[synced]
		if syncNow {
			js.unsynced = false
		}
		integrateNow := len(js.waiters) > 0 || len(js.queue) >= l.opts.MaxBatch ||
			len(js.queue) > 0 && !now.Before(js.integrateBy) ||
			js.old < 0 && js.j.used(js.j.active) >= js.resetSize // a switch is due
		js.mu.Unlock()
		if syncNow {
			if err := js.j.sync(synced, syncEnd); err != nil {
				l.mu.Lock()
				l.commitErr = fmt.Errorf("audit log %w: syncing the journal: %v", failclosed.ErrUnavailable, err)
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
		ahead := js.j.toPrefault()
		js.mu.Unlock()
		if ahead != nil && !prefault(ahead) {
			js.mu.Lock()
			js.j.noPrefault = true
			js.mu.Unlock()
		}
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
	// (An entry completing an intent is in the journal before it is in
	// the queue, or a replay after a crash would find the intent
	// unfinished and record the request twice.)
	rotatedEnd := int64(-1)
	if js.old < 0 && js.j.used(js.j.active) >= js.resetSize {
		// Nothing unsynced (what was written since the last sync is
		// pending records, durable in the store: journalCopy): the old
		// file needs no sync before its fold. It would have copied them
		// all to the mirror at once, up to resetSize.
		needSync := js.unsynced
		l.rotate()
		if js.old >= 0 && needSync {
			rotatedEnd = js.j.size[js.old]
		}
	}
	old := js.old
	if len(js.queue) == 0 && old < 0 {
		js.mu.Unlock()
		return nil
	}
	began := time.Now()
	start, entries, waiters := js.start, js.queue, js.waiters
	end := js.size
	pids := js.pidsOf(start, end)
	durable := len(waiters) > 0 || old >= 0
	// Appenders go on journaling while the committer hashes and the store
	// commits.
	js.start, js.queue, js.waiters = end, nil, nil
	active, activeEnd := js.j.active, js.j.size[js.j.active]
	js.mu.Unlock()
	if rotatedEnd >= 0 {
		// What the old file got since its last sync is durable before the
		// fold, as it would have been within syncDelay.
		if err := js.j.sync(old, rotatedEnd); err != nil {
			l.mu.Lock()
			l.commitErr = fmt.Errorf("audit log %w: syncing the journal: %v", failclosed.ErrUnavailable, err)
			l.mu.Unlock()
		}
	}

	hashes, root, err := l.hashQueue(start, end, entries)
	if err == nil {
		err = l.fold(start, entries, pids, hashes, durable)
	}
	js.mu.Lock()
	if err != nil {
		for _, w := range waiters {
			w.done <- result{Index: -1, Err: err}
		}
		// Put them back in front of what came meanwhile.
		js.start = start
		js.queue = append(entries, js.queue...)
		js.mu.Unlock()
		return err
	}
	l.advance(start, end, hashes)
	l.stored(end, root, len(entries), began)
	for _, w := range waiters {
		w.done <- result{Index: w.index}
	}
	l.foldedPIDs(start, pids)
	if durable && len(js.queue) == 0 && len(js.intents) == 0 {
		// The store has every journaled entry on disk and no intent
		// waits: no need to sync the journal for them.
		js.unsynced = false
	}
	js.mu.Unlock()
	if durable && old >= 0 {
		// The store has every entry of the old file on disk, and the
		// running requests' intents are in the active one: durably too
		// before the old file goes. No one writes the old file any more.
		if err := js.j.sync(active, activeEnd); err != nil {
			return err // tried again at the next commit
		}
		if err := js.j.empty(old); err != nil {
			return err // tried again at the next commit
		}
		js.mu.Lock()
		js.old = -1
		js.mu.Unlock()
	}
	return nil
}

// rotate moves appenders to the other journal file, which is empty, and
// copies the running requests' intents there, so that the active file can
// be emptied once the store has its entries durably; js.mu is held. If the
// intents cannot be copied, nothing changes (the log is then unhealthy).
func (l *Log) rotate() {
	js := &l.js
	from := js.j.active
	js.j.active ^= 1
	ids := make([]uint64, 0, len(js.intents))
	for id := range js.intents {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		// The room kept for their entries is kept in the new file.
		if err := l.journalWrite(js.intents[id].rec, 0); err != nil {
			js.j.active = from
			js.j.size[from^1] = fileHeader // what was copied is ignored: the file is emptied again later
			l.mu.Lock()
			l.commitErr = fmt.Errorf("audit log %w: moving running requests to the other journal file: %v", failclosed.ErrUnavailable, err)
			l.mu.Unlock()
			return
		}
	}
	js.old = from
}

// integrateFinal is integrate(true), with js.mu held, which it releases.
func (l *Log) integrateFinal() error {
	js := &l.js
	defer js.mu.Unlock()
	// Requests still running get entries of their own: the journal goes.
	if err := l.materialize(); err != nil {
		for _, w := range js.waiters {
			w.done <- result{Index: -1, Err: err}
		}
		js.waiters = nil
		return err // the journal keeps them for the next Open
	}
	start, entries, waiters := js.start, js.queue, js.waiters
	end := js.size
	pids := js.pidsOf(start, end)
	began := time.Now()
	hashes, root, err := l.hashQueue(start, end, entries)
	if err == nil {
		err = l.fold(start, entries, pids, hashes, true)
	}
	if err != nil {
		for _, w := range waiters {
			w.done <- result{Index: -1, Err: err}
		}
		js.waiters = nil
		return err // the journal keeps them for the next Open
	}
	l.advance(start, end, hashes)
	l.stored(end, root, len(entries), began)
	for _, w := range waiters {
		w.done <- result{Index: w.index}
	}
	l.foldedPIDs(start, pids)
	js.start, js.queue, js.waiters = end, nil, nil
	return js.j.reset()
}

// fold commits entries at start to the store; on failure the log turns
// unhealthy.
func (l *Log) fold(start int64, entries [][]byte, pids []int64, hashes []tlog.Hash, durable bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.CommitTimeout)
	defer cancel()
	// The journal keeps what is not durable until a durable commit covers
	// it, so the store need not sync it soon.
	mode := store.AuditKept
	if durable {
		mode = store.AuditDurable
	}
	var err error
	if pf, ok := l.st.(pendingFolder); ok && pids != nil {
		// Made from pending records, which go in the same transaction.
		err = pf.AppendAuditFrom(ctx, start, entries, pids, tlog.StoredHashCount(start), hashesOf(hashes), mode)
	} else {
		err = l.st.AppendAudit(ctx, start, entries, tlog.StoredHashCount(start), hashesOf(hashes), mode)
	}
	if err != nil {
		err = fmt.Errorf("audit log %w: storing %d journaled entries: %v", failclosed.ErrUnavailable, len(entries), err)
		l.mu.Lock()
		l.commitErr = err
		l.mu.Unlock()
		return err
	}
	return nil
}

// materialize gives every live intent an entry of its own, the decision
// alone, in the queue; js.mu is held. Each entry is journaled as the
// intent's completion, durably, before the store has it: a kill after the
// store took it, before the journal was emptied, must not leave the
// intent unfinished for the next Open to record again.
func (l *Log) materialize() error {
	js := &l.js
	if len(js.intents) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(js.intents))
	for id := range js.intents {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		in := js.intents[id]
		idx := js.size
		rec := make([]byte, recPrefix, recPrefix+len(in.rec)+48)
		rec[0] = recComplete
		binary.BigEndian.PutUint64(rec[1:recPrefix], id)
		rec = audit.AppendEntry(rec, idx, in.time(), in.body)
		// Its room, kept since Begin, is this record's.
		js.reserved -= in.reserve
		if err := l.journalWrite(rec, 0); err != nil {
			js.reserved += in.reserve
			return fmt.Errorf("audit log %w: journaling the entry of a running request: %w", failclosed.ErrUnavailable, err)
		}
		js.size++
		js.queue = append(js.queue, rec[recPrefix:])
		in.index = idx
		delete(js.intents, id)
	}
	if err := js.j.sync(js.j.active, js.j.size[js.j.active]); err != nil {
		return fmt.Errorf("audit log %w: syncing the journal: %w", failclosed.ErrUnavailable, err)
	}
	return nil
}

// hashQueue computes the stored hashes the entries at [start, end) add and
// the tree's root at end, without moving the frontier: the committer does
// that once the store has them. In journal mode only the committer uses
// the frontier.
func (l *Log) hashQueue(start, end int64, entries [][]byte) ([]tlog.Hash, tlog.Hash, error) {
	ctx := context.Background()
	hashes, err := l.hashEntries(ctx, start, entries)
	if err != nil { // not expected: the frontier covers the queue
		return nil, tlog.Hash{}, fmt.Errorf("audit: hashing %d journaled entries: %w", len(entries), err)
	}
	root, err := tlog.TreeHash(end, l.batchReader(ctx, tlog.StoredHashCount(start), &hashes))
	if err != nil {
		return nil, tlog.Hash{}, fmt.Errorf("audit: tree hash of %d entries: %w", end, err)
	}
	return hashes, root, nil
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
