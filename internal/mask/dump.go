package mask

// Hex dumps print a stream 16 bytes a line: an offset, the bytes' hex in
// groups, and (most of them) the bytes themselves beside it, a '.' for
// each that is not printable ASCII:
//
//	xxd                00000010: 3d68 756e 7465 7232 2d70 6c61 696e 2d53  =hunter2-plain-S
//	hexdump -C, hd     00000010  3d 68 75 6e 74 65 72 32  2d 70 6c 61 69 6e 2d 53  |=hunter2-plain-S|
//	od -A x -t x1z     000010 3d 68 75 6e 74 65 72 32 2d 70 6c 61 69 6e 2d 53  >=hunter2-plain-S<
//	od -x, hexdump     0000020 683d 6e75 6574 3272 702d 616c 6e69 532d
//
// A secret longer than what is left of a line comes in pieces, in the hex
// and in the text column alike, none of them a form. So a third thread of
// the automaton, the dump thread, reads consecutive dump lines and runs
// over the bytes their hex groups spell: a form found there (the raw
// value, its base64, its UTF-16...) masks its hex from the first group to
// the last, the lines between with their text columns, and the last
// line's text column from the first to the last of its bytes there.
//
// A dump line is an offset of 6 to 16 hex (or octal) digits, then ':' or
// a space, then groups of an even number of hex digits (at most 16)
// separated by spaces, then nothing, or a text column after two spaces or
// more ('|' or '>' delimits it, except after xxd's ':', where two spaces
// always end the groups). Groups of 4 or more digits after an offset
// without ':' are little-endian words, as od -x and hexdump print them on
// the little-endian machines CI runs on (x86-64, arm64); xxd's are in
// byte order. Since xxd -e prints little-endian words after a ':', and od
// --endian=big (or od -x on a big-endian host) words in byte order, a
// second state of the automaton (g2) reads each group's bytes in the other
// order. A CI log's timestamp before the offset (stamp.go) is read past
// when the offset begins with '0' (a dump of less than 16 MiB). Not read:
// od's octal and character formats, dumps whose lines carry another prefix
// or colour codes (xxd -R), and lines of more than 256 bytes.
//
// Finding the lines costs a look at the first bytes of each line, in the
// loop that already visits line ends (findWraps); a line that does not
// begin with 6 hex digits costs nothing more.

// dumpState is where the dump thread is in a line.
type dumpState uint8

const (
	dsOffset dumpState = iota // at the line's start or in its offset (the zero value: a stream starts a line)
	dsSep                     // after the offset, before the first group
	dsGroup                   // in a group
	dsGap                     // in the spaces after a group
	dsText                    // in the text column
	dsIdle                    // the line is no dump line: wait for its end
	dsStamp                   // in a CI log's timestamp before the offset (stamp.go)
)

// maxDumpLine bounds the bytes of one dump line (xxd -c 256).
const maxDumpLine = 256

type dumpThread struct {
	st     dumpState
	colon  bool // the offset ended in ':' (xxd): groups are in byte order, two spaces end them
	delim  byte // the text column's closing delimiter ('|' or '<'), 0 if none
	n      int  // digits in the offset or in the group being read; spaces in a gap
	digits [16]byte
	gStart int64 // stream position of the group's first digit
	gEnd   int64 // stream position after the line's last group
	textAt int64 // stream position of the text column's first byte
	lineN  int   // bytes that the line's groups spell
	last   [2]byte

	g      int32   // automaton state over the spelt bytes
	g2     int32   // the same, each group's bytes in the other order (alt)
	fed    int64   // bytes fed
	lineAt int64   // fed at the line's first byte
	starts []int64 // ring by feed count: the position of each fed byte's group
	// The line's bytes whose text is to be masked: [ascLo, ascEnd), none
	// when ascEnd is 0.
	ascLo, ascEnd int
	// The timestamp being read (dsStamp), and whether the line had one.
	stamp   [stampMax]byte
	sn      int
	stamped bool
}

var isHexDigit = func() (t [256]bool) {
	for _, c := range []byte("0123456789abcdefABCDEF") {
		t[c] = true
	}
	return t
}()

// reset ends the dump being read: what follows is no continuation of it.
func (d *dumpThread) reset() {
	d.g, d.g2, d.ascEnd = 0, 0, 0
}

// hold is the longer of the two states' partial matches.
func (d *dumpThread) hold(a *automaton) int64 {
	return int64(max(a.hold[d.g], a.hold[d.g2]))
}

// run reads p, the bytes of one line (or of its part in this chunk, no
// line end among them) from stream position at.
func (d *dumpThread) run(s *scanner, p []byte, at int64) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		d.last[0], d.last[1] = d.last[1], c
		switch d.st {
		case dsIdle:
			return
		case dsText:
			if at+int64(i)-d.textAt < int64(d.lineN)+3 {
				continue
			}
			// Longer than a text column (the line's bytes, its two
			// delimiters and a '\r'): no dump line. What came of it
			// after groups that spell a form is masked; nothing more
			// is held for it.
			if d.ascEnd > 0 {
				s.addSpan(d.gEnd, at+int64(i))
			}
		case dsOffset:
			switch {
			case isHexDigit[c] && d.n < 16:
				d.digits[d.n] = c
				d.n++
				continue
			case d.n >= 6 && (c == ':' || c == ' '):
				d.colon = c == ':'
				d.st = dsSep
				continue
			case d.n == 4 && c == '-' && !d.stamped && i >= 4:
				// A timestamp's year, not an offset; mostly the chunk
				// holds all of it.
				if whole, more := stampScan(p[i-4 : min(len(p), i-4+stampMax)]); whole > 0 && !more {
					d.n, d.stamped = 0, true
					i += whole - 5
					continue
				} else if !more {
					break
				}
				fallthrough
			case d.n == 4 && c == '-' && !d.stamped:
				// A timestamp's year, not an offset.
				d.st, d.sn = dsStamp, copy(d.stamp[:], d.digits[:4])
				d.stamp[d.sn] = c
				d.sn++
				if _, more := stampScan(d.stamp[:d.sn]); more {
					continue
				}
			}
		case dsStamp:
			d.stamp[d.sn] = c
			d.sn++
			whole, more := stampScan(d.stamp[:d.sn])
			if more {
				continue
			}
			if whole > 0 {
				// The offset begins with the bytes read after the
				// timestamp (no GitLab header after all), if any.
				rest := d.stamp[whole:d.sn]
				d.st, d.n, d.stamped = dsOffset, 0, true
				d.run(s, rest, at+int64(i+1-len(rest)))
				if d.st == dsIdle {
					return
				}
				continue
			}
		case dsSep:
			switch {
			case c == ' ':
				continue
			case isHexDigit[c]:
				d.startGroup(c, at+int64(i))
				continue
			}
		case dsGroup:
			switch {
			case isHexDigit[c] && d.n < len(d.digits):
				d.digits[d.n] = c
				d.n++
				continue
			case c == ' ' && d.n%2 == 0:
				d.endGroup(s, at+int64(i))
				d.st, d.n = dsGap, 1
				continue
			case c == '\r' && d.n%2 == 0:
				d.endGroup(s, at+int64(i))
				d.st, d.textAt = dsText, at+int64(i) // a line end follows, or this is no dump line
				continue
			}
		case dsGap:
			switch {
			case c == ' ':
				d.n++
				continue
			case isHexDigit[c] && (d.n < 2 || !d.colon):
				d.startGroup(c, at+int64(i))
				continue
			case d.n >= 2:
				d.st, d.delim, d.textAt = dsText, 0, at+int64(i)
				switch c {
				case '|':
					d.delim = '|'
				case '>':
					d.delim = '<'
				}
				continue
			}
		}
		// No dump line.
		d.st = dsIdle
		d.reset()
		return
	}
	// A line without end (spaces after a partial form, say) holds no
	// more than lineEnd lets a partial match over many lines hold.
	if end := at + int64(len(p)); d.st != dsIdle && end-d.partialStart(s.a, end) > int64(8*s.a.maxLen+256) {
		d.st = dsIdle
		d.reset()
	}
}

func (d *dumpThread) startGroup(c byte, at int64) {
	d.st, d.n, d.gStart = dsGroup, 1, at
	d.digits[0] = c
}

// endGroup feeds the bytes the group spells; end is the position after it.
func (d *dumpThread) endGroup(s *scanner, end int64) {
	a := s.a
	if d.starts == nil {
		d.starts = make([]int64, ringSize(a.maxLen))
	}
	mask := int64(len(d.starts) - 1)
	nb := d.n / 2
	if d.lineN+nb > maxDumpLine {
		d.st = dsIdle
		d.reset()
		return
	}
	d.gEnd = end
	at := func(j int) byte {
		h, _ := unhexByte(d.digits[2*j])
		l, _ := unhexByte(d.digits[2*j+1])
		return h<<4 | l
	}
	for k := 0; k < nb; k++ {
		j := k
		if !d.colon && nb > 1 {
			j = nb - 1 - k // a little-endian word: its last byte printed first
		}
		d.starts[d.fed&mask] = d.gStart
		d.fed++
		d.lineN++
		d.g = a.next(d.g, at(j))
		d.g2 = a.next(d.g2, at(nb-1-j)) // the other order (the same byte when nb is 1)
		if ml := int64(max(a.matchLen[d.g], a.matchLen[d.g2])); ml > 0 {
			first := d.fed - ml
			s.addSpan(d.starts[first&mask], end)
			lo := int(max(first, d.lineAt) - d.lineAt)
			if d.ascEnd == 0 || lo < d.ascLo {
				d.ascLo = lo
			}
			d.ascEnd = d.lineN
		}
	}
}

// lineEnd ends the line at the '\n' at stream position nl; the thread
// then waits for the next line (startLine).
func (d *dumpThread) lineEnd(s *scanner, nl int64) {
	switch d.st {
	case dsGroup:
		if d.n%2 == 0 {
			d.endGroup(s, nl)
		} else {
			d.st = dsIdle
		}
	case dsOffset, dsSep, dsStamp:
		d.st = dsIdle
	}
	if d.st == dsIdle {
		d.reset()
		return
	}
	if d.st == dsText && d.ascEnd > 0 {
		// The text column is the line's last lineN bytes, before its
		// closing delimiter and '\r'.
		end := nl
		k := 1
		if d.last[1] == '\r' {
			end--
			k = 0
		}
		if d.delim != 0 && d.last[k] == d.delim {
			end--
		}
		if t := end - int64(d.lineN); t >= d.gEnd {
			s.addSpan(t+int64(d.ascLo), t+int64(d.ascEnd))
		}
	}
	// A dump line: the next one may continue it. Bound what a partial
	// match over many lines holds, as the normalising thread's.
	if h := d.hold(s.a); h > 0 && nl-d.starts[(d.fed-h)&int64(len(d.starts)-1)] > int64(8*s.a.maxLen+256) {
		d.reset()
	}
	d.st, d.ascEnd = dsIdle, 0
}

// startLine starts reading a line that may be a dump's, continuing the
// dump that the line before was part of, if any.
func (d *dumpThread) startLine() {
	d.st, d.n, d.lineN, d.lineAt, d.last, d.ascEnd, d.stamped = dsOffset, 0, 0, d.fed, [2]byte{}, 0, false
}

// mayBeOffset reports whether a line beginning with b (what of it has come)
// may begin with a dump's offset: 6 hex digits, after a CI log's timestamp
// or not.
func mayBeOffset(b []byte) bool {
	if len(b) >= 5 && !isHexDigit[b[4]] {
		// The fifth byte first: a timestamp's '-' or a word's end.
		if b[4] != '-' {
			return false
		}
		// Every line of a CI log has a timestamp: what follows it is
		// looked at first, cheaply, then the timestamp itself. There a
		// dump's offset must begin with '0' (a dump of less than 16 MiB),
		// which few log lines do.
		k := quickStamp(b)
		if k > 0 && (k < len(b) && b[k] != '0' || !mayBeDumpLine(b[k:])) {
			return false
		}
		if k == 0 && len(b) >= stampMax {
			return false
		}
		whole, more := stampScan(b[:min(len(b), stampMax)])
		switch {
		case more:
			return true // the chunk ends in what may be a timestamp
		case whole == 0:
			return false
		}
		return mayBeDumpLine(b[whole:])
	}
	if len(b) >= 6 {
		return isHexDigit[b[4]] && isHexDigit[b[0]] && isHexDigit[b[1]] && isHexDigit[b[2]] && isHexDigit[b[3]] && isHexDigit[b[5]]
	}
	for _, c := range b {
		if !isHexDigit[c] {
			return false
		}
	}
	return true
}

// partialStart is the first position the thread's future matches may
// cover (pos: none).
func (d *dumpThread) partialStart(a *automaton, pos int64) int64 {
	b := pos
	if h := d.hold(a); h > 0 && d.fed >= h {
		b = d.starts[(d.fed-h)&int64(len(d.starts)-1)]
	}
	switch {
	case d.st == dsGroup:
		b = min(b, d.gStart)
	case d.ascEnd > 0:
		b = min(b, d.gEnd) // the text column that is to be masked comes
	}
	return b
}

// markTail masks the thread's held partial match of min bytes or more, and
// the part of a text column that is to be masked and has come: the stream
// is cut here.
func (d *dumpThread) markTail(s *scanner, min int) {
	if h := d.hold(s.a); h >= int64(min) && d.fed >= h {
		s.addSpan(d.starts[(d.fed-h)&int64(len(d.starts)-1)], s.pos)
	}
	if d.st == dsText && d.ascEnd > 0 && d.gEnd < s.pos {
		s.addSpan(d.gEnd, s.pos)
	}
}

// dumpOffset reports whether b begins with what the dump thread takes for
// a dump line's offset.
func dumpOffset[T string | []byte](b T) bool {
	if len(b) > 4 && b[4] == '-' {
		if whole, _ := stampScan(b[:min(len(b), stampMax)]); whole > 0 {
			b = b[whole:]
		}
	}
	n := 0
	for n < len(b) && n <= 16 && isHexDigit[b[n]] {
		n++
	}
	return n >= 6 && n <= 16 && n < len(b) && (b[n] == ':' || b[n] == ' ')
}

func unhexByte(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// quickStamp is where what follows the timestamp that b may begin with
// would begin, found from a few of its bytes (stampScan checks it); 0 when
// b begins with none, or has not come far enough to tell.
func quickStamp(b []byte) int {
	if len(b) < 21 || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return 0
	}
	k := 19
	if b[k] == '.' {
		for k++; k < len(b) && k < 30 && isDecDigit(b[k]); k++ {
		}
	}
	if k+1 >= len(b) || b[k] != 'Z' || b[k+1] != ' ' {
		return 0
	}
	k += 2
	if k+4 > len(b) {
		return 0 // GitLab Runner's header may not have come
	}
	if (b[k+2] == 'O' || b[k+2] == 'E') && (b[k+3] == ' ' || b[k+3] == '+') {
		k += 4 // GitLab Runner's header
	}
	return k
}

// mayBeDumpLine reports whether b, a line after its timestamp (what of it
// has come), may be a dump's: an offset of 6 to 16 hex digits, ':' or a
// space, spaces, and a group of an even number of hex digits that a space
// or the line's end ends. A log line beginning with a hex word (a commit,
// a digest) mostly fails at once.
func mayBeDumpLine(b []byte) bool {
	if len(b) >= 6 && !(isHexDigit[b[5]] && isHexDigit[b[2]]) {
		return false // a word
	}
	i := 0
	for i < len(b) && i <= 16 && isHexDigit[b[i]] {
		i++
	}
	switch {
	case i == len(b):
		return true
	case i < 6 || i > 16 || b[i] != ':' && b[i] != ' ':
		return false
	}
	for i++; i < len(b) && b[i] == ' '; i++ {
	}
	g := i
	for i < len(b) && i-g <= 16 && isHexDigit[b[i]] {
		i++
	}
	if i == len(b) {
		return true
	}
	n := i - g
	return n >= 2 && n <= 16 && n%2 == 0 && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r')
}
