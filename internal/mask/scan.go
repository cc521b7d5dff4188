package mask

import "slices"

// A scanner runs the automaton over a stream, records the spans to mask and
// produces the masked output, holding back only bytes that a match could
// still cover.
//
// Two threads of the automaton read the stream. The raw thread sees every
// byte and finds every form as it literally occurs. The normalising thread
// sees the stream with '\r' and CSI escape sequences removed (see
// normThread) and so finds a secret that is interrupted by a colour code or
// printed with "\r\n" line ends. It is started from the raw thread's state
// at a '\r' or ESC and stops as soon as its partial match no longer reaches
// back over a removed byte, because from then on the raw thread sees the same
// thing: on ordinary text it lives for a byte or two. A third thread reads
// hex dumps (dump.go).

// span is a half-open range [start, end) of stream positions to mask.
type span struct {
	start, end int64
	emitted    bool // the replacement has been written
}

type scanner struct {
	a    *automaton
	repl string
	keep bool // each masked byte becomes '*' instead of repl per run
	// exactOnly: never use the skip filter (tests compare the two).
	exactOnly bool

	g    int32 // raw thread state
	pos  int64 // stream position of the next byte
	norm normThread
	dump dumpThread // over the bytes that hex dump lines spell (dump.go)
	head headState  // a form's suffix the stream may begin with (head.go)

	spans []span    // disjoint, sorted; those a future match may still overlap
	wraps []int64   // stream positions of the wrap newlines in the chunk being scanned (wrap.go)
	wrap  wrapCarry // what the chunks before it leave to tell them
	done  int64     // every position before done is written or suppressed
	pend  []byte    // the stream bytes [done, pos) not yet written
	// carry: the '=' or "=\r" that ended the last piece (feed), not yet
	// scanned: it may begin a quoted-printable soft line break whose line
	// end comes with the next piece.
	carry  [2]byte
	nCarry int
}

func newScanner(a *automaton, repl string) *scanner {
	return &scanner{a: a, repl: repl}
}

func ringSize(maxLen int) int {
	n := 1
	for n < maxLen+1 {
		n <<= 1
	}
	return n
}

// scan runs both threads over p, recording matches: with the skip filter
// over long inputs, else byte by byte.
func (s *scanner) scan(p []byte) {
	if s.head.on {
		s.scanHead(p)
	}
	s.findWraps(p)
	if s.a.skip != nil && len(p) >= minSkipRun && !s.exactOnly {
		s.scanSkip(p)
		return
	}
	s.scanExact(p)
}

// feed scans p, the next bytes of a stream, and appends to dst the output
// that no later byte can change. A piece ending in '=' or "=\r" keeps
// those bytes back, unscanned, until the next piece (or drainCarry): a
// soft line break split between two pieces is then scanned whole, as
// findWraps must see it to look through it.
func (s *scanner) feed(dst, p []byte) []byte {
	for s.nCarry > 0 && len(p) > 0 {
		// The carried bytes and the (at most) two after them decide the
		// break: they are scanned together (their own end carried again
		// if it may begin one), the rest as it comes.
		var b [4]byte
		n := copy(b[:], s.carry[:s.nCarry])
		j := min(len(p), 2)
		n += copy(b[n:], p[:j])
		s.nCarry = 0
		p = p[j:]
		dst = s.feedPiece(dst, b[:n])
	}
	return s.feedPiece(dst, p)
}

func (s *scanner) feedPiece(dst, p []byte) []byte {
	if len(p) == 0 {
		return dst
	}
	k := 0
	switch {
	case p[len(p)-1] == '=':
		k = 1
	case len(p) >= 2 && p[len(p)-2] == '=' && p[len(p)-1] == '\r':
		k = 2
	}
	s.nCarry = copy(s.carry[:], p[len(p)-k:])
	p = p[:len(p)-k]
	s.scan(p)
	return s.emit(dst, p, s.boundary())
}

// drainCarry scans the carried bytes as they are (the stream is cut
// after them: no line end that comes later makes them a break).
func (s *scanner) drainCarry(dst []byte) []byte {
	if s.nCarry == 0 {
		return dst
	}
	c := s.carry
	p := c[:s.nCarry]
	s.nCarry = 0
	s.scan(p)
	return s.emit(dst, p, s.boundary())
}

// scanExact runs both threads over every byte of p, stopping at each wrap
// newline (which the dense table does not flag) to start the normalising
// thread there.
func (s *scanner) scanExact(p []byte) {
	for len(s.wraps) > 0 && len(p) > 0 {
		k, _ := slices.BinarySearch(s.wraps, s.pos)
		if k == len(s.wraps) || s.wraps[k] >= s.pos+int64(len(p)) {
			break
		}
		w := int(s.wraps[k] - s.pos)
		s.scanRun(p[:w])
		s.slowStep(p[w])
		p = p[w+1:]
	}
	s.scanRun(p)
}

// scanRun runs both threads over every byte of p.
func (s *scanner) scanRun(p []byte) {
	a := s.a
	tbl, cls, stride := a.dense, &a.class, a.stride
	for i := 0; i < len(p); {
		if s.norm.alive || s.g >= a.nDense {
			s.slowStep(p[i])
			i++
			continue
		}
		off := uint32(s.g) * stride
		j := i
		for ; j < len(p); j++ {
			if off == 0 {
				for j < len(p) && a.rootStay[p[j]] {
					j++
				}
				if j == len(p) {
					break
				}
			}
			e := tbl[off+uint32(cls[p[j]])]
			if e&flagBit != 0 {
				break
			}
			off = e
		}
		s.g = int32(off / stride)
		s.pos += int64(j - i)
		i = j
		if i < len(p) {
			s.slowStep(p[i])
			i++
		}
	}
}

// slowStep moves both threads over one byte.
func (s *scanner) slowStep(c byte) {
	a := s.a
	prev := s.g
	s.g = a.next(prev, c)
	if ml := a.matchLen[s.g]; ml > 0 {
		s.addSpan(s.pos+1-int64(ml), s.pos+1)
	}
	wrap := (c == '\n' || c == '=') && len(s.wraps) > 0 && s.wrapAt(s.pos)
	if !s.norm.alive && (c == '\r' || c == esc || wrap) {
		s.norm.spawn(a, prev, s.pos)
	}
	if s.norm.alive {
		s.norm.step(s, c, s.pos, wrap)
	}
	s.pos++
}

// boundary is the first position a future match may cover.
func (s *scanner) boundary() int64 {
	if s.head.on {
		return 0 // what the stream began with may yet end a form
	}
	b := s.pos - int64(s.a.hold[s.g])
	if s.norm.alive {
		b = min(b, s.norm.partialStart(s.a, s.pos))
	}
	if s.dump.st != dsIdle {
		b = min(b, s.dump.partialStart(s.a, s.pos))
	}
	return b
}

// addSpan records a match covering [start, end), merging overlaps. The
// threads' matches mostly come in order of their ends; the dump thread's
// may end before one already recorded.
func (s *scanner) addSpan(start, end int64) {
	if end <= s.done {
		return
	}
	i := len(s.spans)
	for i > 0 && s.spans[i-1].end > start {
		i--
	}
	j := i
	emitted := false
	for j < len(s.spans) && s.spans[j].start < end {
		start, end = min(start, s.spans[j].start), max(end, s.spans[j].end)
		emitted = emitted || s.spans[j].emitted
		j++
	}
	if !emitted && start < s.done {
		// Only after a flush: the bytes before done went out already.
		start = s.done
	}
	s.spans = slices.Replace(s.spans, i, j, span{start, end, emitted})
}

// emit appends to out the output for every position before limit that no
// future match can change (limit is boundary() or, to flush, pos), given
// that p holds the stream bytes [pos-len(p), pos) and s.pend those before.
func (s *scanner) emit(out []byte, p []byte, limit int64) []byte {
	pStart := s.pos - int64(len(p))
	pendStart := pStart - int64(len(s.pend))
	// bytes appends the stream bytes [from, to), to <= pos.
	bytesOf := func(out []byte, from, to int64) []byte {
		if from < pStart {
			e := min(to, pStart)
			out = append(out, s.pend[from-pendStart:e-pendStart]...)
			from = e
		}
		if from < to {
			out = append(out, p[from-pStart:to-pStart]...)
		}
		return out
	}
	i := 0
	for i < len(s.spans) && s.spans[i].end <= s.done {
		i++
	}
	for {
		if i < len(s.spans) && s.spans[i].start <= s.done && s.spans[i].start <= limit {
			switch {
			case s.keep:
				// A span merged with a later match grows: star what
				// it added.
				for k := s.done; k < s.spans[i].end; k++ {
					out = append(out, '*')
				}
			case !s.spans[i].emitted:
				out = append(out, s.repl...)
			}
			s.spans[i].emitted = true
			s.done = s.spans[i].end
			i++
			continue
		}
		if s.done >= limit {
			break
		}
		next := limit
		if i < len(s.spans) && s.spans[i].start < next {
			next = s.spans[i].start
		}
		out = bytesOf(out, s.done, next)
		s.done = next
	}
	// Drop the spans no future match can reach (matches start at or after
	// limit); a passed span that a future match may overlap is kept so that
	// the two merge into one replacement.
	k := 0
	for k < len(s.spans) && s.spans[k].end <= limit {
		k++
	}
	if k > 0 {
		s.spans = append(s.spans[:0], s.spans[k:]...)
	}
	// Keep the bytes still held, in pend's own memory: no allocation per
	// call once it has grown.
	switch {
	case s.done >= s.pos:
		s.pend = s.pend[:0]
	case s.done < pStart:
		n := copy(s.pend, s.pend[s.done-pendStart:])
		s.pend = append(s.pend[:n], p...)
	default:
		s.pend = append(s.pend[:0], p[s.done-pStart:]...)
	}
	return out
}

// markTail records the held partial match of each thread as a match when
// it is at least min bytes long: the stream is cut there, and what began a
// form must not show. The normalising thread's counts the bytes it fed, so
// a form that a colour code, '\r' or wrap newline interrupted is masked
// from its first byte, as the raw thread's is. The stream's start is no
// longer looked at (head.go): if all of the stream so far may be a piece
// of a form, at least min and headGram bytes long, it is masked.
func (s *scanner) markTail(min int) {
	s.endHead(min)
	if min <= 0 {
		return
	}
	if h := int64(s.a.hold[s.g]); h >= int64(min) {
		s.addSpan(s.pos-h, s.pos)
	}
	if t := &s.norm; t.alive {
		if h := int64(s.a.hold[t.g]); h >= int64(min) {
			// Up to the last byte fed: the bytes the thread removed after
			// it (a line end it took for a wrap, "=\n" that ends padded
			// base64) are no part of the form. An escape sequence still
			// being read may be none, and is masked with it.
			mask := int64(len(t.ring) - 1)
			end := t.ring[(t.fed-1)&mask] + 1
			if t.csi != 0 || t.stampOn && t.stampN > 0 {
				end = s.pos
			}
			s.addSpan(t.ring[(t.fed-h)&mask], end)
		}
	}
	s.dump.markTail(s, min)
}

// normThread is the automaton thread over the normalised stream: the
// stream with every '\r', every wrap newline (wrap.go) and every CSI
// escape sequence removed, where a CSI sequence is ESC '[', then at most
// csiMax bytes in 0x20-0x3F (parameters and intermediates), then one final
// byte in 0x40-0x7E; this covers colour codes (ESC[...m) and cursor and
// erase codes.
// When parsing fails, ESC and the bytes after it are kept and parsing
// restarts at the failing byte.
type normThread struct {
	alive     bool
	g         int32
	ring      []int64 // stream position of each fed byte, by feed count
	fed       int64
	sinceSkip int64 // bytes fed since the last removed one
	csi       int   // 0 none, 1 after ESC, 2 inside ESC[
	csiStart  int64
	csiBuf    [csiMax + 2]byte
	csiN      int
	// After a wrap newline, the bytes of what may be a CI log's timestamp
	// (stamp.go), held until it is known whether they are one.
	stampOn    bool
	stampN     int
	stampStart int64
	stampBuf   [stampMax]byte
}

const csiMax = 32

// spawn starts the thread from the raw state g before position pos.
func (t *normThread) spawn(a *automaton, g int32, pos int64) {
	if t.ring == nil {
		t.ring = make([]int64, ringSize(a.maxLen))
	}
	t.alive, t.g, t.csi, t.stampOn = true, g, 0, false
	d := int64(a.depth[g])
	t.fed, t.sinceSkip = d, d
	for k := int64(0); k < d; k++ {
		t.ring[k&int64(len(t.ring)-1)] = pos - d + k
	}
}

func (t *normThread) feed(s *scanner, c byte, pos int64) {
	a := s.a
	t.g = a.next(t.g, c)
	mask := int64(len(t.ring) - 1)
	t.ring[t.fed&mask] = pos
	t.fed++
	t.sinceSkip++
	if ml := int64(a.matchLen[t.g]); ml > 0 {
		s.addSpan(t.ring[(t.fed-ml)&mask], pos+1)
	}
}

func (t *normThread) flushCSI(s *scanner) {
	t.csi = 0
	for k := 0; k < t.csiN; k++ {
		t.feed(s, t.csiBuf[k], t.csiStart+int64(k))
	}
}

func (t *normThread) step(s *scanner, c byte, pos int64, wrap bool) {
	if t.stampOn {
		if t.stampN == 0 {
			t.stampStart = pos
		}
		t.stampBuf[t.stampN] = c
		t.stampN++
		whole, more := stampScan(t.stampBuf[:t.stampN])
		if more {
			return
		}
		// The timestamp is removed, the bytes read after it are fed, and
		// c (unless the timestamp ends with it) is read as usual.
		t.stampOn = false
		if whole > 0 {
			t.sinceSkip = 0
		}
		if whole == t.stampN {
			t.stillAlive(s, pos)
			return
		}
		for k := whole; k < t.stampN-1; k++ {
			t.feed(s, t.stampBuf[k], t.stampStart+int64(k))
		}
	}
	for {
		switch t.csi {
		case 0:
			switch {
			case c == '\r' || wrap:
				t.sinceSkip = 0
				// A CI log's timestamp may follow a wrap newline.
				t.stampOn, t.stampN = wrap && c == '\n', 0
			case c == esc:
				t.csi, t.csiStart, t.csiN = 1, pos, 1
				t.csiBuf[0] = c
			default:
				t.feed(s, c, pos)
			}
		case 1:
			if c != '[' {
				t.flushCSI(s)
				continue
			}
			t.csi = 2
			t.csiBuf[1] = c
			t.csiN = 2
		case 2:
			switch {
			case c >= 0x20 && c <= 0x3f && t.csiN < len(t.csiBuf):
				t.csiBuf[t.csiN] = c
				t.csiN++
			case c >= 0x40 && c <= 0x7e:
				t.csi = 0
				t.sinceSkip = 0
			default:
				t.flushCSI(s)
				continue
			}
		}
		break
	}
	if t.csi != 0 {
		return
	}
	t.stillAlive(s, pos)
}

// stillAlive ends the thread after the byte at pos when it follows no
// partial match across removed bytes, or one that has held too much.
func (t *normThread) stillAlive(s *scanner, pos int64) {
	d := int64(s.a.depth[t.g])
	if d <= t.sinceSkip {
		// The partial match lies in plain bytes the raw thread saw too.
		t.alive, t.stampOn = false, false
		return
	}
	// Bound what a long run of removed bytes can make us hold.
	if pos+1-t.ring[(t.fed-d)&int64(len(t.ring)-1)] > int64(8*s.a.maxLen+256) {
		t.alive, t.stampOn = false, false
	}
}

// partialStart is the first position the thread's future matches may cover.
func (t *normThread) partialStart(a *automaton, pos int64) int64 {
	b := pos
	if h := int64(a.hold[t.g]); h > 0 {
		b = t.ring[(t.fed-h)&int64(len(t.ring)-1)]
	}
	if t.csi != 0 {
		b = min(b, t.csiStart)
	}
	if t.stampOn && t.stampN > 0 {
		b = min(b, t.stampStart)
	}
	return b
}
