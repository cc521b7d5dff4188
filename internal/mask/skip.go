package mask

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// The skip filter lets the scanner pass over text in which no form can
// occur without running the automaton over every byte.
//
// Every pattern is at least m bytes long (m = automaton.minLen). Take the
// q-byte substrings ("grams") of every pattern's first m bytes, at offsets
// 0 to m-q, and put them in a bit set (hashed). An occurrence of a pattern
// that starts at st covers the m-q+1 positions [st, st+m-q]; of positions
// checked every S = m-q+1 bytes, one falls among them, and the gram there
// is one of that pattern's. So checking one gram every S bytes finds a
// position near every occurrence (and some others, false positives);
// only there, and around the bytes that start the normalising thread
// ('\r', ESC, a wrap newline: wrap.go), does the automaton run (see
// scanner.scanSkip, which also says why its state is exact wherever it
// matters).

// skipFilter is the gram set. Built once per automaton, immutable.
type skipFilter struct {
	q     int // gram length: 8, or 4 when the shortest pattern is short (4 to 15 bytes)
	s     int // stride: m-q+1
	shift uint
	bits  []uint64
	// lone: bytes in no pattern (and neither '\r' nor ESC). A '\r' followed
	// by one of them cannot be part of a normalised occurrence.
	lone [256]bool
}

// maxFilterBits bounds the gram set: 512 KiB.
const maxFilterBits = 1 << 22

// minSkipRun: shorter inputs are scanned byte by byte (the filter's
// set-up around each call would cost more than it saves).
const minSkipRun = 256

func (f *skipFilter) hash(p []byte, i int) uint64 {
	const k = 0x9E3779B97F4A7C15 // Fibonacci hashing
	if f.q == 8 {
		return (binary.LittleEndian.Uint64(p[i:]) * k) >> f.shift
	}
	return (uint64(binary.LittleEndian.Uint32(p[i:])) * k) >> f.shift
}

func (f *skipFilter) has(p []byte, i int) bool {
	h := f.hash(p, i)
	return f.bits[h>>6]&(1<<(h&63)) != 0
}

// buildFilter makes the filter for patterns (all at least minLen long), its
// bit set at most maxBytes bytes; nil when there are no patterns.
func buildFilter(patterns [][]byte, minLen int, used *[256]bool, maxBytes int) *skipFilter {
	if len(patterns) == 0 || minLen < 4 {
		return nil
	}
	f := &skipFilter{q: 8}
	if minLen < 16 {
		f.q = 4
	}
	f.s = minLen - f.q + 1
	grams := len(patterns) * f.s
	bits := 1 << 12
	for bits < 32*grams && bits < maxFilterBits && bits < 8*maxBytes {
		bits <<= 1
	}
	f.shift = uint(64 - log2(bits))
	f.bits = make([]uint64, bits/64)
	for _, p := range patterns {
		for off := 0; off+f.q <= minLen; off++ {
			h := f.hash(p, off)
			f.bits[h>>6] |= 1 << (h & 63)
		}
	}
	for c := range f.lone {
		f.lone[c] = !used[c] && c != '\r' && c != esc
	}
	return f
}

func log2(n int) int {
	k := 0
	for 1<<k < n {
		k++
	}
	return k
}

// scanSkip runs the scanner over p (the stream bytes [base, base+len(p)),
// base = s.pos on entry) using the filter: the automaton runs only from the
// start until it may stop, around each filter hit and around each '\r' or
// ESC, and over the last bytes (so that its state at the end is exact).
//
// Invariant while skipping from x (an index into p): every match starting
// before x has been recorded, and no pattern prefix that starts before x
// reaches the current position. It holds when the automaton stops at i
// with its state exact: then the partial match in progress (depth d)
// starts at x = i-d, and a prefix starting earlier and reaching i would be
// a longer suffix that is a pattern prefix.
//
// Why the state is exact where it matters. A run restarted from the root
// at y has, at position i, the longest suffix of p[y:i] that is a pattern
// prefix; it is exact when the true one starts at y or later. A true
// prefix starting at st >= x (invariant) that is at least m long contains
// a checked position in [st, st+m-q] whose gram is in the set: that was a
// hit, and the run for it started at or before st and would still be
// running. So while skipping, the true state has depth < m. Hence:
//   - at a '\r', ESC or wrap newline at r (which needs the exact state,
//     to start the normalising thread) the run restarts at max(x, r-m+1),
//     or at max(x, r-q+1) when the gram ending at r is not in the set (a
//     prefix of q or more bytes would have it among its first m);
//   - for a hit at p (matches starting in [p-(m-q), p]) the run restarts at
//     max(x, p-(m-q)) and is exact from p+q-1 on, so it stops no earlier
//     than p+q. A '\r' or ESC before p+q is handled first (its run then
//     covers the hit's matches too), so none meets an inexact state;
//   - at the end, the run restarts at max(x, n-m+1): exact at the end, and
//     it covers every match whose checked position lies too close to the
//     end to hold a whole gram.
//
// A '\r' (or run of them) followed by a byte of no pattern is passed over:
// the normalising thread, started there, would die at that byte whatever
// its state, having recorded nothing.
func (s *scanner) scanSkip(p []byte) {
	a, f := s.a, s.a.skip
	n := len(p)
	m, q, stride := a.minLen, f.q, f.s
	base := s.pos
	i := 0     // next byte for the automaton
	last := -1 // where the automaton last stopped; s.g is its exact state there
	// exact runs the automaton from i until it may stop: at or after min,
	// with the normalising thread dead and its partial match starting
	// after c. It reports whether it stopped (false: it reached the end).
	exact := func(c, min int) bool {
		for {
			if i >= min && !s.norm.alive && i-int(a.depth[s.g]) > c {
				last = i
				return true
			}
			if i >= n {
				return false
			}
			to := min
			if i >= min {
				to = i + 8
			}
			to = max(i+1, to)
			if to > n {
				to = n
			}
			s.scanExact(p[i:to])
			i = to
		}
	}
	// restart resumes the automaton at at: from the root, or, when the
	// last stop is at or after at, from there with its state, so that no
	// byte is run twice (and a '\r' or ESC met again would start the
	// normalising thread from a state that is not exact).
	restart := func(at int) {
		if at <= last {
			i, s.pos = last, base+int64(last)
			return
		}
		i, s.g, s.pos = at, 0, base+int64(at)
	}
	if !exact(-1, 0) {
		return // the state carried into the next call is exact
	}
	x := i - int(a.depth[s.g])
	// The next '\r' and ESC at or after a position, each found with
	// bytes.IndexByte (vectorised) and kept until passed.
	nextCR, nextEsc := -1, -1
	find := func(at *int, from int, c byte) int {
		if *at < from {
			if k := bytes.IndexByte(p[from:], c); k >= 0 {
				*at = from + k
			} else {
				*at = n
			}
		}
		return *at
	}
	nextSp := func(from int) int {
		sp := min(find(&nextCR, from, '\r'), find(&nextEsc, from, esc))
		if len(s.wraps) > 0 { // a wrap newline starts the thread too
			if k, _ := slices.BinarySearch(s.wraps, base+int64(from)); k < len(s.wraps) {
				sp = min(sp, int(s.wraps[k]-base))
			}
		}
		return sp
	}
	sp := nextSp(i)
	hits := 0
	// crEnd is where the last run of '\r' read ends: the automaton stops
	// at each of its bytes in turn, and reading the run again from each
	// cost a piece of n '\r' n*n/2 steps.
	crEnd := -1
	for pt := x; ; {
		if sp < n && sp < pt+q {
			r := sp
			k := r
			if r < crEnd {
				k = crEnd
			}
			for k < n && p[k] == '\r' {
				k++
			}
			crEnd = k
			if k > r && k < n && f.lone[p[k]] {
				sp = nextSp(k)
				continue
			}
			// The partial match before r is shorter than m; shorter than
			// q too when the gram just before r is not in the set (were
			// it q or longer, that gram would lie in its first m bytes).
			back := m - 1
			if r-q >= x && !f.has(p, r-q) {
				back = q - 1
			}
			restart(max(x, r-back))
			if !exact(r, r+1) {
				return
			}
		} else {
			if pt+q > n {
				break
			}
			if !f.has(p, pt) {
				pt += stride
				continue
			}
			restart(max(x, pt-(m-q)))
			if hits++; hits > 64 && hits*8*m > pt {
				// Text full of hits (a dump of the secrets, say): the
				// automaton alone is cheaper than restarting it at each.
				exact(n, n)
				return
			}
			if !exact(pt, pt+q) {
				return
			}
		}
		x = i - int(a.depth[s.g])
		pt = x
		if sp < i {
			sp = nextSp(i)
		}
	}
	restart(max(x, n-m+1))
	exact(n, n)
}
