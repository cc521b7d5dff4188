package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// TreeHead is a tree size and its root hash, e.g. from a checkpoint a
// verifier saw before.
type TreeHead struct {
	Size int64    `json:"size"`
	Root [32]byte `json:"root"`
}

// VerifyOptions tune Verify and VerifyStream.
type VerifyOptions struct {
	// PageSize is how many entries are read per storage query (default
	// DefaultPageSize).
	PageSize int
	// Seen is a checkpoint this verifier saw and trusted before (from its
	// state file): the log must still contain that exact tree.
	Seen *TreeHead
	// Now is the clock entries after the latest checkpoint are aged by
	// (default time.Now).
	Now func() time.Time
}

// MaxUnsignedAge is how old the first entry after the latest signed
// checkpoint may be, when the checkpoint was read, before Verify fails on
// it: a running server signs every 500 ms while the log grows and once
// more when it stops, so older entries that no signature covers mean
// deleted checkpoints, a server that stopped signing, or one that crashed
// (its next start signs them). Younger ones are a live log's newest.
const MaxUnsignedAge = 60 * time.Second

// VerifyResult is the outcome of a verification. Reason is empty and
// FirstBad is -1 when the log is intact. Otherwise FirstBad is the first
// index that can no longer be trusted: the exact entry when an entry's
// index, its stored hash or a missing entry shows it; when only a signed
// root disagrees (entries and stored hashes rewritten together) or the
// latest checkpoint is missing or forged, the size last proven by a good
// root (a checkpoint seen before, else 0).
type VerifyResult struct {
	Size       int64    // entries read and hashed
	Root       [32]byte // root hash recomputed over those entries
	Checkpoint TreeHead // the latest signed checkpoint (zero if none)
	FirstBad   int64    // first index that can no longer be trusted, or -1
	Reason     string   // what is wrong, empty when intact
	// Unproven is how many entries after the latest signed checkpoint were
	// read: they match their stored hashes, but no signature covers them,
	// so they are not part of what verified intact (see MaxUnsignedAge).
	// UnprovenSince is the time of the first of them.
	Unproven      int64
	UnprovenSince time.Time
}

// OK reports whether the log verified.
func (r *VerifyResult) OK() bool { return r.Reason == "" }

// treeBuilder computes RFC 6962 subtree hashes incrementally: the stack
// holds the hashes of the complete subtrees of the tree so far, left to
// right, largest first.
type treeBuilder struct {
	stack  []tlog.Hash
	levels []int
	n      int64
}

// add appends a leaf hash and appends to out the stored hashes it creates
// in tlog order: the leaf's, then each parent it completes.
func (b *treeBuilder) add(leaf tlog.Hash, out []tlog.Hash) []tlog.Hash {
	out = append(out, leaf)
	return b.addAt(leaf, 0, 1, out)
}

// addAt appends the root h of a complete subtree of the given level
// covering n entries (n = 1<<level) whose first entry is at b.n, and
// appends to out each parent it completes (not h itself).
func (b *treeBuilder) addAt(h tlog.Hash, level int, n int64, out []tlog.Hash) []tlog.Hash {
	for len(b.stack) > 0 && b.levels[len(b.levels)-1] == level {
		h = tlog.NodeHash(b.stack[len(b.stack)-1], h)
		level++
		b.stack = b.stack[:len(b.stack)-1]
		b.levels = b.levels[:len(b.levels)-1]
		out = append(out, h)
	}
	b.stack = append(b.stack, h)
	b.levels = append(b.levels, level)
	b.n += n
	return out
}

// emptyRoot is the RFC 6962 hash of the empty tree, SHA-256("").
var emptyRoot = func() tlog.Hash {
	h, _ := tlog.TreeHash(0, nil)
	return h
}()

// treeHash returns the root hash of the tree so far.
func (b *treeBuilder) treeHash() tlog.Hash {
	if len(b.stack) == 0 {
		return emptyRoot
	}
	h := b.stack[len(b.stack)-1]
	for i := len(b.stack) - 2; i >= 0; i-- {
		h = tlog.NodeHash(b.stack[i], h)
	}
	return h
}

// check is the verification state shared by Verify and VerifyStream.
type check struct {
	tb      treeBuilder
	cp      *TreeHead // signed checkpoint that verified, nil if none
	seen    *TreeHead
	anchor  int64 // entries below it are proven by a verified root
	res     VerifyResult
	hashes  []tlog.Hash
	stopped bool
	// cpProblem says why the latest checkpoint is unusable, if it is.
	cpProblem string
	asOf      time.Time // when the checkpoint was read
	// The time of the entry at the checkpoint's size, the first no
	// signature covers; unset when there is none or it has no valid time.
	tailTime time.Time
}

func newCheck(opts VerifyOptions) *check {
	c := &check{seen: opts.Seen, asOf: time.Now()}
	if opts.Now != nil {
		c.asOf = opts.Now()
	}
	c.res.FirstBad = -1
	return c
}

// tail notes the entry at the checkpoint's size, the first unproven one.
func (c *check) tail(data []byte) {
	if e, err := ParseEntry(data); err == nil {
		c.tailTime = e.Time
	}
}

// bad records a problem from index i; the smallest index wins.
func (c *check) bad(i int64, format string, args ...any) {
	if c.res.FirstBad == -1 || i < c.res.FirstBad {
		c.res.FirstBad = i
		c.res.Reason = fmt.Sprintf(format, args...)
	}
}

// atSize checks the known roots for the tree of the current size.
func (c *check) atSize() {
	n := c.tb.n
	if c.seen != nil && c.seen.Size == n {
		if c.tb.treeHash() != c.seen.Root {
			c.bad(c.anchor, "the tree of %d entries differs from the checkpoint seen before: entries in [%d, %d) were changed", n, c.anchor, n)
			c.stopped = true
		} else {
			c.anchor = n
		}
	}
	if c.cp != nil && c.cp.Size == n {
		if c.tb.treeHash() != c.cp.Root {
			c.bad(c.anchor, "the tree of %d entries does not match the signed checkpoint: entries in [%d, %d) were changed", n, c.anchor, n)
			c.stopped = true
		} else {
			c.anchor = n
		}
	}
}

// entry checks and hashes the entry at position pos; it returns the stored
// hashes it creates (valid until the next call).
func (c *check) entry(pos int64, data []byte) []tlog.Hash {
	return c.hashedEntry(pos, EntryIndex(data), tlog.RecordHash(data))
}

// hashedEntry is entry given the entry's index field (EntryIndex) and leaf
// hash, computed ahead.
func (c *check) hashedEntry(pos, idx int64, leaf tlog.Hash) []tlog.Hash {
	if idx != pos {
		if idx < 0 {
			c.bad(pos, "entry at position %d is not a well-formed entry", pos)
		} else {
			c.bad(pos, "entry at position %d says index %d (deleted, inserted or reordered entries)", pos, idx)
		}
		c.stopped = true
		return nil
	}
	c.hashes = c.tb.add(leaf, c.hashes[:0])
	c.atSize()
	return c.hashes
}

// target reports whether a root is checked at a size in (start, end].
func (c *check) target(start, end int64) bool {
	in := func(t *TreeHead) bool { return t != nil && t.Size > start && t.Size <= end }
	return in(c.seen) || in(c.cp)
}

// finish checks what can only be checked once every entry was read.
func (c *check) finish(total int64) *VerifyResult {
	n := c.tb.n
	if !c.stopped {
		if c.cp != nil && n < c.cp.Size {
			c.bad(n, "log has %d entries but the signed checkpoint covers %d: entries from %d are missing", n, c.cp.Size, n)
		}
		if c.seen != nil && n < c.seen.Size {
			c.bad(n, "log rolled back: %d entries, but a checkpoint of %d was seen before", n, c.seen.Size)
		}
		if n < total {
			c.bad(n, "storage reports %d entries but only %d could be read", total, n)
		}
	}
	if c.cp != nil && c.seen != nil && c.cp.Size < c.seen.Size {
		c.bad(min(n, c.seen.Size), "latest signed checkpoint (%d) is older than the one seen before (%d): checkpoints rolled back", c.cp.Size, c.seen.Size)
	}
	if c.cpProblem != "" {
		// Without a valid signed checkpoint, only what a checkpoint seen
		// before proves can be trusted.
		c.bad(c.anchor, "%s", c.cpProblem)
	}
	if !c.stopped && c.cp != nil && n > c.cp.Size {
		c.res.Unproven, c.res.UnprovenSince = n-c.cp.Size, c.tailTime
		age := c.asOf.Sub(c.tailTime)
		switch {
		case c.tailTime.IsZero():
			c.bad(c.cp.Size, "entries [%d, %d) are covered by no signed checkpoint, and the first has no valid time", c.cp.Size, n)
		case age > MaxUnsignedAge || -age > MaxUnsignedAge:
			c.bad(c.cp.Size, "entries [%d, %d) are covered by no signed checkpoint, and the first was written at %s, %s from when the checkpoint was read (a running server signs every 500 ms): newer checkpoints were deleted, or the server stopped signing or crashed (a start signs them)",
				c.cp.Size, n, c.tailTime.Format(time.RFC3339), age.Round(time.Second))
		}
	}
	c.res.Size = n
	c.res.Root = c.tb.treeHash()
	return &c.res
}

// openCheckpoint sets the signed checkpoint, or records why it is unusable.
func (c *check) openCheckpoint(text []byte, found bool, verifierKey string) {
	if !found {
		c.cpProblem = "no signed checkpoint"
		return
	}
	size, root, err := ParseCheckpoint(text, verifierKey)
	if err != nil {
		c.cpProblem = fmt.Sprintf("latest checkpoint is not valid: %v", err)
		return
	}
	c.cp = &TreeHead{Size: size, Root: root}
	c.res.Checkpoint = *c.cp
}

type page struct {
	start   int64
	n       int        // entries read
	indexes []int64    // each entry's index field (EntryIndex), -1 if malformed
	hashes  [][32]byte // stored hashes for the page's records, nil if unreadable
	missing int64      // first stored-hash index found missing, -1 if none
	short   bool       // fewer entries than asked: the end of the log
	err     error

	// Computed by the page's reader, in parallel with other pages:
	leaves []tlog.Hash // each entry's leaf hash
	// whole: the page is a complete aligned subtree (a power-of-two
	// number of entries starting at a multiple of it) whose entries all
	// carry their position as index and whose stored hashes inside the
	// subtree all match the recomputed ones; root is that subtree's hash
	// and level its height. Such a page is folded into the tree as one
	// node: only the parents above it are left to hash and compare.
	whole bool
	root  tlog.Hash
	level int
}

// Verify recomputes the tree from the stored entries, page by page, and
// checks: each entry's index field against its position, every stored hash
// against the recomputed one, the latest signed checkpoint (signature and
// root) and, if given, a checkpoint seen before. The returned error is for
// failures to read; a tampered log gives a result with FirstBad and Reason.
func Verify(ctx context.Context, r Reader, verifierKey string, opts VerifyOptions) (*VerifyResult, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	c := newCheck(opts)
	total, err := r.AuditSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: reading log size: %w", err)
	}
	rowSize, text, err := r.LatestAuditCheckpoint(ctx)
	switch {
	case err == nil:
		c.openCheckpoint(text, true, verifierKey)
		if c.cp != nil && c.cp.Size != rowSize {
			// An older note filed under a larger size hides the
			// checkpoints after it.
			c.cpProblem = fmt.Sprintf("the latest checkpoint row is filed under size %d but its signed note is for %d (checkpoint rows altered)", rowSize, c.cp.Size)
		}
	case isNotFound(err):
		// An empty log that never had a checkpoint is intact.
		if total > 0 || opts.Seen != nil {
			c.openCheckpoint(nil, false, verifierKey)
		}
	default:
		return nil, fmt.Errorf("audit: reading latest checkpoint: %w", err)
	}
	if opts.Now == nil {
		c.asOf = time.Now() // entries after the checkpoint are aged from here
	}
	want := total
	if c.cp != nil && c.cp.Size > want {
		want = c.cp.Size
	}
	if c.seen != nil && c.seen.Size > want {
		want = c.seen.Size
	}
	c.atSize()

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan page, 2)
	go readPages(rctx, r, want, opts.PageSize, pages)
	for p := range pages {
		if p.err != nil {
			return nil, p.err
		}
		firstHash := tlog.StoredHashCount(p.start)
		end := p.start + int64(p.n)
		if p.whole && p.missing < 0 && c.tb.n == p.start && !c.target(p.start, end-1) {
			// Everything inside the page checked out in its reader: fold
			// its root in and compare the parents above it, which are
			// the last stored hashes of its last entry.
			c.hashes = c.tb.addAt(p.root, p.level, end-p.start, c.hashes[:0])
			x := tlog.StoredHashCount(end) - int64(len(c.hashes))
			for _, h := range c.hashes {
				if p.hashes[x-firstHash] != h {
					level, k := tlog.SplitStoredHashIndex(x)
					c.bad(k<<level, "stored hash %d (level %d over entries from %d) does not match the entries", x, level, k<<level)
					c.stopped = true
					break
				}
				x++
			}
			if c.stopped {
				break
			}
			c.atSize()
			continue
		}
		for i := range p.n {
			pos := p.start + int64(i)
			hs := c.hashedEntry(pos, p.indexes[i], p.leaves[i])
			if c.stopped {
				break
			}
			hi := tlog.StoredHashCount(pos)
			for j, h := range hs {
				x := hi + int64(j)
				if p.missing >= 0 && x >= p.missing {
					level, k := tlog.SplitStoredHashIndex(p.missing)
					c.bad(k<<level, "stored hash %d (level %d over entries from %d) is missing", p.missing, level, k<<level)
					c.stopped = true
					break
				}
				if p.hashes[x-firstHash] != h {
					level, k := tlog.SplitStoredHashIndex(x)
					if level == 0 {
						c.bad(k, "entry %d does not match its stored hash (changed entry)", k)
					} else {
						c.bad(k<<level, "stored hash %d (level %d over entries from %d) does not match the entries", x, level, k<<level)
					}
					c.stopped = true
					break
				}
			}
			if c.stopped {
				break
			}
		}
		if c.stopped {
			break
		}
	}
	cancel()
	for range pages { // let the reader finish
	}
	if !c.stopped && c.cp != nil && c.tb.n > c.cp.Size {
		es, err := r.AuditEntries(ctx, c.cp.Size, 1)
		if err != nil {
			return nil, fmt.Errorf("audit: reading entry %d: %w", c.cp.Size, err)
		}
		if len(es) == 1 {
			c.tail(es[0])
		}
	}
	return c.finish(total), nil
}

// DefaultPageSize is how many entries Verify reads per query unless told:
// a power of two, so that each page is a complete subtree its reader
// hashes on its own.
const DefaultPageSize = 4096

// readParallel is how many pages are read (and hashed) at once, ahead of
// the fold.
const readParallel = 3

// readPages reads entries and their stored hashes ahead of the hashing,
// several pages at once, and sends them in order. A short page ends it.
func readPages(ctx context.Context, r Reader, want int64, size int, out chan<- page) {
	defer close(out)
	slots := make(chan chan page, readParallel)
	go func() {
		defer close(slots)
		for pos := int64(0); pos < want; pos += int64(size) {
			ch := make(chan page, 1)
			select {
			case slots <- ch:
			case <-ctx.Done():
				return
			}
			go func(pos int64, limit int) { ch <- readPage(ctx, r, pos, limit) }(pos, int(min(int64(size), want-pos)))
		}
	}()
	for ch := range slots {
		var p page
		select {
		case p = <-ch:
		case <-ctx.Done():
			return
		}
		if p.err != nil {
			if ctx.Err() == nil {
				out <- p
			}
			return
		}
		if p.n == 0 {
			return
		}
		select {
		case out <- p:
		case <-ctx.Done():
			return
		}
		if p.short {
			return
		}
	}
}

// EntryScanner is a Reader that can hand each entry to a function rather
// than return copies of a page of them: Verify then keeps only each
// entry's index and hash.
type EntryScanner interface {
	// ScanAuditEntries calls fn with each of up to limit entries from
	// start, in index order; data is valid only during the call.
	ScanAuditEntries(ctx context.Context, start int64, limit int, fn func(data []byte) error) error
}

// errPageFull stops ReadEntries' scan once the page holds maxBytes.
var errPageFull = errors.New("audit: page full")

// ReadEntries reads up to limit entries from start through sc, stopping
// before the one that would take their bytes past maxBytes (0: no bound;
// the first entry is always kept, so a reader going on from start plus
// what it got always gets further). The entries share one buffer, sliced
// once it stops growing, rather than an allocation each; what the bound
// leaves out is never held.
func ReadEntries(ctx context.Context, sc EntryScanner, start int64, limit, maxBytes int) ([][]byte, error) {
	var buf []byte
	var ends []int
	err := sc.ScanAuditEntries(ctx, start, limit, func(data []byte) error {
		if maxBytes > 0 && len(ends) > 0 && len(buf)+len(data) > maxBytes {
			return errPageFull
		}
		if buf == nil {
			buf = make([]byte, 0, min(limit*(len(data)+len(data)/4+16), 1<<20))
		}
		buf = append(buf, data...)
		ends = append(ends, len(buf))
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return nil, err
	}
	out := make([][]byte, len(ends))
	from := 0
	for i, e := range ends {
		out[i] = buf[from:e:e]
		from = e
	}
	return out, nil
}

// leafHasher computes RFC 6962 leaf hashes, as tlog.RecordHash does, with
// one SHA-256 state and no allocation per entry.
type leafHasher struct {
	h   hash.Hash
	sum []byte
}

func newLeafHasher() *leafHasher {
	return &leafHasher{h: sha256.New(), sum: make([]byte, 0, sha256.Size)}
}

func (l *leafHasher) hash(data []byte) tlog.Hash {
	l.h.Reset()
	l.h.Write([]byte{0x00})
	l.h.Write(data)
	var out tlog.Hash
	copy(out[:], l.h.Sum(l.sum[:0]))
	return out
}

// readPage reads the entries [pos, pos+limit) and their stored hashes, and
// hashes the entries (see hashPage).
func readPage(ctx context.Context, r Reader, pos int64, limit int) page {
	p := page{start: pos, missing: -1}
	lh := newLeafHasher()
	add := func(data []byte) {
		p.indexes = append(p.indexes, EntryIndex(data))
		p.leaves = append(p.leaves, lh.hash(data))
	}
	if sc, ok := r.(EntryScanner); ok {
		p.indexes, p.leaves = make([]int64, 0, limit), make([]tlog.Hash, 0, limit)
		err := sc.ScanAuditEntries(ctx, pos, limit, func(data []byte) error {
			if len(p.indexes) == limit {
				return nil
			}
			add(data)
			return nil
		})
		if err != nil {
			return page{err: fmt.Errorf("audit: reading entries from %d: %w", pos, err)}
		}
	} else {
		es, err := r.AuditEntries(ctx, pos, limit)
		if err != nil {
			return page{err: fmt.Errorf("audit: reading entries from %d: %w", pos, err)}
		}
		for _, data := range es[:min(len(es), limit)] {
			add(data)
		}
	}
	p.n = len(p.indexes)
	p.short = p.n < limit
	if p.n == 0 {
		return p
	}
	lo, hi := tlog.StoredHashCount(pos), tlog.StoredHashCount(pos+int64(p.n))
	idx := make([]int64, hi-lo)
	for i := range idx {
		idx[i] = lo + int64(i)
	}
	var err error
	p.hashes, err = r.AuditHashes(ctx, idx)
	switch {
	case err == nil && len(p.hashes) != len(idx):
		err = fmt.Errorf("store returned %d of %d hashes", len(p.hashes), len(idx))
	case isNotFound(err):
		p.hashes, p.missing, err = hashesOneByOne(ctx, r, idx)
	}
	if err != nil {
		return page{err: fmt.Errorf("audit: reading stored hashes from %d: %w", lo, err)}
	}
	p.checkWhole()
	return p
}

// checkWhole, when the page is a whole aligned subtree, checks everything
// inside it (see page.whole). Any problem leaves whole false: the fold
// then goes entry by entry and reports the first one as it always did.
func (p *page) checkWhole() {
	n := int64(p.n)
	if n&(n-1) != 0 || p.start%n != 0 || p.missing >= 0 {
		return
	}
	var tb treeBuilder
	var hs []tlog.Hash
	x := 0 // next stored hash of the page to compare
	for i := range p.n {
		if p.indexes[i] != p.start+int64(i) {
			return
		}
		hs = tb.add(p.leaves[i], hs[:0])
		for _, h := range hs {
			if x >= len(p.hashes) || p.hashes[x] != h {
				return
			}
			x++
		}
	}
	p.whole, p.root, p.level = true, tb.stack[0], tb.levels[0]
}

// hashesOneByOne finds the first missing stored hash of a page.
func hashesOneByOne(ctx context.Context, r Reader, idx []int64) ([][32]byte, int64, error) {
	out := make([][32]byte, len(idx))
	for i, x := range idx {
		h, err := r.AuditHashes(ctx, []int64{x})
		if isNotFound(err) {
			return out, x, nil
		}
		if err != nil {
			return nil, -1, err
		}
		out[i] = h[0]
	}
	return out, -1, nil
}

// MaxLineSize bounds one NDJSON line read by VerifyStream.
const MaxLineSize = MaxEntrySize + 1

// VerifyStream verifies entries read as NDJSON from rd (index 0 first, as
// GET /v1/audit/entries or `mayfly audit export` give them) against a
// signed checkpoint and, if given, a checkpoint seen before. It holds only
// O(log n) hashes in memory.
func VerifyStream(ctx context.Context, rd io.Reader, checkpoint []byte, verifierKey string, opts VerifyOptions) (*VerifyResult, error) {
	c := newCheck(opts)
	c.openCheckpoint(checkpoint, len(checkpoint) > 0, verifierKey)
	c.atSize()
	br := bufio.NewReaderSize(rd, 256<<10)
	var pos int64
	for !c.stopped {
		if pos%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		line, err := readLine(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				c.bad(pos, "entry at position %d is longer than %d bytes", pos, MaxEntrySize)
				break
			}
			return nil, fmt.Errorf("audit: reading entry %d: %w", pos, err)
		}
		if c.cp != nil && pos == c.cp.Size {
			c.tail(line)
		}
		c.entry(pos, line)
		pos++
	}
	return c.finish(0), nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its "\n"; a final line without
// "\n" counts. It returns io.EOF at the end.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		frag, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, frag...)
			if len(long) > MaxLineSize {
				return nil, errLineTooLong
			}
			continue
		}
		if err == io.EOF && len(frag) == 0 && long == nil {
			return nil, io.EOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if long != nil {
			frag = append(long, frag...)
		}
		if len(frag) > MaxLineSize {
			return nil, errLineTooLong
		}
		return bytes.TrimSuffix(frag, []byte("\n")), nil
	}
}
