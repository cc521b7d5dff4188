package mask

import (
	"bytes"
	"slices"
)

// base64(1) and MIME wrap their output at 76 columns, PEM and openssl at
// 64, Ruby's Base64.encode64 (and pack("m")) at 60, as xxd -p does hex, so
// a secret's encoding longer than a line comes in pieces that are no form.
// A '\n' (or "\r\n") that ends a run of exactly wrapRuby, wrapShort or
// wrapLong base64 characters (hex digits are some) is therefore removed by
// the normalising thread, as '\r' is, so the joined encoding matches the
// forms. Plain lines rarely are such a run, and where one is (a list of
// SHA-256 digests) the thread dies at the next byte unless a form
// continues.
const (
	wrapRuby  = 60
	wrapShort = 64
	wrapLong  = 76
)

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '+' || c == '/' || c == '-' || c == '_'
}

// wrapCarry is what a chunk of the stream leaves for the next one to tell
// a wrap: the base64 run ending the stream so far (at most wrapLong+1), or,
// when the stream ends in '\r', the run before that '\r'.
type wrapCarry struct {
	run   int
	endCR bool
}

// runBefore is the length (at most wrapLong+1) of the run of base64
// characters that a '\n' at p[r] follows, one '\r' just before it aside;
// p's start continues what w carries.
func (w wrapCarry) runBefore(p []byte, r int) int {
	e := r
	switch {
	case e > 0 && p[e-1] == '\r':
		e--
	case e == 0 && w.endCR:
		return w.run
	}
	n := 0
	for e > 0 && n <= wrapLong && isB64(p[e-1]) {
		e--
		n++
	}
	if e == 0 && !w.endCR {
		n += w.run
	}
	return min(n, wrapLong+1)
}

// isWrap reports whether the '\n' at p[r] ends a wrapped base64 line.
func (w wrapCarry) isWrap(p []byte, r int) bool {
	n := w.runBefore(p, r)
	return n == wrapRuby || n == wrapShort || n == wrapLong
}

// after is the carry once p has passed.
func (w wrapCarry) after(p []byte) wrapCarry {
	if len(p) == 0 {
		return w
	}
	return wrapCarry{run: w.runBefore(p, len(p)), endCR: p[len(p)-1] == '\r'}
}

// qpBreak is the index of the '=' of the quoted-printable soft line break
// that the '\n' at p[r] ends ("=\n" or "=\r\n"), or -1.
func qpBreak(p []byte, r int) int {
	switch {
	case r >= 1 && p[r-1] == '=':
		return r - 1
	case r >= 2 && p[r-1] == '\r' && p[r-2] == '=':
		return r - 2
	}
	return -1
}

// hasWrap reports whether p, taken as a whole stream, holds a wrap newline
// or a quoted-printable soft line break.
func hasWrap(p []byte) bool {
	if bytes.Contains(p, []byte("=\n")) || bytes.Contains(p, []byte("=\r\n")) {
		return true
	}
	for i := 0; ; {
		k := bytes.IndexByte(p[i:], '\n')
		if k < 0 {
			return false
		}
		if (wrapCarry{}).isWrap(p, i+k) {
			return true
		}
		i += k + 1
	}
}

// findWraps records the stream positions of the wrap newlines in p (the
// bytes from s.pos on) and carries the run at its end to the next call.
// It finds newlines with a vectorised search and looks at the last word
// of each line; after a newline at r the next wrap is at r+61 or later
// (its run starts after r), so the search jumps there, except while it
// reads a hex dump line by line (dump.go): a line beginning as a dump's
// does stops the jump, and the lines jumped over before it are looked at.
//
// A quoted-printable soft line break ("=\n" or "=\r\n": MIME cuts lines of
// 76 characters so) is removed the same way, its '=' too: both are
// recorded. One that ends a line shorter than wrapRuby+1 characters is
// not. A chunk never ends inside one: a stream's piece that ends in '='
// or "=\r" leaves those bytes to the next (scanner.feed).
func (s *scanner) findWraps(p []byte) {
	s.wraps = s.wraps[:0]
	d := &s.dump
	dumps := s.a.minLen > 0
	prev := -1 // the last line end found in p
	for i := 0; i < len(p); {
		k := bytes.IndexByte(p[i:], '\n')
		if dumps && d.st != dsIdle {
			end := len(p)
			if k >= 0 {
				end = i + k
			}
			d.run(s, p[i:end], s.pos+int64(i))
		}
		if k < 0 {
			break
		}
		r := i + k
		q := qpBreak(p, r)
		if q >= 0 {
			s.wraps = append(s.wraps, s.pos+int64(q))
		}
		if q >= 0 || s.wrap.isWrap(p, r) {
			s.wraps = append(s.wraps, s.pos+int64(r))
		}
		// The next wrap is at r+61 or later (its run starts after r).
		next := r + 1 + wrapRuby
		if dumps {
			cand := mayBeOffset(p[r+1:])
			if d.st != dsIdle {
				d.lineEnd(s, s.pos+int64(r))
			} else if cand && d.g == 0 && d.g2 == 0 && prev+1 < r {
				// A dump's line follows lines the search jumped over:
				// its first lines may be among them.
				s.dumpBack(p, prev, r)
			}
			if cand {
				d.startLine()
				next = r + 1 // a dump is read line by line
			} else {
				d.g, d.g2 = 0, 0 // no dump, or the dump's end
			}
		}
		prev = r
		i = next
	}
	if dumps && d.st == dsIdle && prev+1 < len(p) {
		// The search jumped over p's last lines: a dump may begin there.
		if j := bytes.LastIndexByte(p[prev+1:], '\n'); j >= 0 {
			if r := prev + 1 + j; mayBeOffset(p[r+1:]) {
				s.dumpBack(p, prev, r)
				d.startLine()
				d.run(s, p[r+1:], s.pos+int64(r+1))
			}
		}
	}
	s.wrap = s.wrap.after(p)
}

// dumpBack reads the dump lines that end the lines of p after its line
// end at prev (-1: none) up to its line end at r, which the search for
// line ends jumped over.
func (s *scanner) dumpBack(p []byte, prev, r int) {
	first := -1 // the first dump line's start
	for end := r; ; {
		j := bytes.LastIndexByte(p[prev+1:end], '\n')
		if j < 0 {
			break // the line begins at prev+1 (looked at already) or before p
		}
		ls := prev + 2 + j
		if !mayBeOffset(p[ls:end]) {
			break
		}
		first, end = ls, ls-1
	}
	if first < 0 {
		return
	}
	d := &s.dump
	for first < r {
		end := first + bytes.IndexByte(p[first:r+1], '\n')
		d.startLine()
		d.run(s, p[first:end], s.pos+int64(first))
		d.lineEnd(s, s.pos+int64(end))
		first = end + 1
	}
}

// wrapAt reports whether the byte at stream position pos is a wrap newline
// of the current chunk.
func (s *scanner) wrapAt(pos int64) bool {
	_, ok := slices.BinarySearch(s.wraps, pos)
	return ok
}
