package mask

import (
	"slices"
)

// A stream may begin inside a form: a ranged download, a `tail -c` read,
// a log viewer resuming at a byte offset. Its first bytes are then the
// form's tail, which the automaton, looking for whole forms, lets through.
// So at the start of a stream (there only) the scanner also looks for a
// suffix of a form of headGram bytes or more at offset 0: its first
// headGram bytes are looked up once in an index of the trie's nodes by the
// headGram bytes on the edges into them, and each node found is followed
// down the trie with the bytes after; one that reaches the end of a form
// masks the stream from its start to there. After the stream's start the
// index is never looked at: the steady state costs nothing.

// headGram is the shortest form suffix masked at a stream's start, as
// MinSecretLen bounds the shortest secret.
const headGram = MinSecretLen

// headIndex lists the trie nodes deeper than headGram (a form's suffix
// starts after its first byte: a whole form is the automaton's) sorted by
// the headGram bytes on the edges into them, which it keeps beside them:
// 12 bytes a node. (Read back through the trie's parents instead, 8 bytes a
// node, each step of a lookup's binary search was 8 dependent reads across
// the automaton; a gateway response looks up each header value, and the
// lookups were ~3 % of a request's CPU.)
type headIndex struct {
	grams []uint64 // sorted
	nodes []int32  // nodes[i]'s gram is grams[i]
}

// buildHead makes the index of a's trie, given each node's parent.
func buildHead(a *automaton, parent []int32) *headIndex {
	grams := make([]uint64, len(parent))
	n := 0
	for v := 1; v < len(parent); v++ {
		if a.depth[v] > headGram {
			n++
		}
	}
	es := make([]headEntry, 0, n)
	for v := int32(1); v < int32(len(parent)); v++ {
		grams[v] = grams[parent[v]]<<8 | uint64(a.inByte[v])
		if a.depth[v] > headGram {
			es = append(es, headEntry{grams[v], v})
		}
	}
	es = radixSort(es, make([]headEntry, len(es)))
	h := &headIndex{grams: make([]uint64, len(es)), nodes: make([]int32, len(es))}
	for i, e := range es {
		h.grams[i], h.nodes[i] = e.g, e.v
	}
	return h
}

// headEntry is a node of the index with the headGram bytes into it.
type headEntry struct {
	g uint64
	v int32
}

// radixSort sorts es by g, a byte at a time from the lowest, through tmp
// (as long as es), and returns whichever of the two holds the result.
// Nodes of one gram may end in any order: find returns them all. A
// comparison sort here was half of building a Matcher, which the gateway
// does on the first request of each token.
func radixSort(es, tmp []headEntry) []headEntry {
	for shift := 0; shift < 64; shift += 8 {
		var count [257]int
		for _, e := range es {
			count[int(byte(e.g>>shift))+1]++
		}
		if len(es) == 0 || count[int(byte(es[0].g>>shift))+1] == len(es) {
			continue // one value of this byte: the pass would move nothing
		}
		for b := 1; b < len(count); b++ {
			count[b] += count[b-1]
		}
		for _, e := range es {
			b := byte(e.g >> shift)
			tmp[count[b]] = e
			count[b]++
		}
		es, tmp = tmp, es
	}
	return es
}

// find appends to dst the nodes whose headGram edge bytes are g.
func (h *headIndex) find(g uint64, dst []int32) []int32 {
	for i := h.first(g); i < len(h.grams) && h.grams[i] == g; i++ {
		dst = append(dst, h.nodes[i])
	}
	return dst
}

// has reports whether some node's headGram edge bytes are g.
func (h *headIndex) has(g uint64) bool {
	i := h.first(g)
	return i < len(h.grams) && h.grams[i] == g
}

// hasPrefix reports whether some node's headGram edge bytes begin with
// the n bytes of g (n < headGram).
func (h *headIndex) hasPrefix(g uint64, n int) bool {
	shift := 8 * uint(headGram-n)
	i := h.first(g << shift)
	return i < len(h.grams) && h.grams[i]>>shift == g
}

// first is the index of the first node whose edge bytes are g or more.
func (h *headIndex) first(g uint64) int {
	i, _ := slices.BinarySearch(h.grams, g)
	return i
}

// size is about how many bytes the index holds.
func (h *headIndex) size() int { return 8*len(h.grams) + 4*len(h.nodes) }

// headState follows the suffixes of forms that the stream may begin with.
type headState struct {
	on   bool    // the stream's start is still being looked at
	n    int64   // bytes seen
	gram uint64  // the first bytes, while fewer than headGram
	cand []int32 // the trie nodes followed: each spells the stream so far at its end
}

// startHead makes the scanner look for a form's suffix at the start of
// its stream.
func (s *scanner) startHead() {
	s.head.on = s.a.head != nil && len(s.a.head.nodes) > 0
}

// scanHead runs the start of the stream, p (the bytes from s.pos on),
// past the candidates, recording a span from 0 for each that ends a form.
func (s *scanner) scanHead(p []byte) {
	a, h := s.a, &s.head
	for _, c := range p {
		h.n++
		if h.n <= headGram {
			h.gram = h.gram<<8 | uint64(c)
			if h.n < headGram {
				// Held only while some gram begins so: a short first
				// write ("hello\n") goes out at once.
				if !a.head.hasPrefix(h.gram, int(h.n)) {
					h.on = false
					return
				}
				continue
			}
			h.cand = a.head.find(h.gram, h.cand[:0])
		} else {
			k := 0
			for _, v := range h.cand {
				if w := a.child(v, c); w >= 0 {
					h.cand[k] = w
					k++
				}
			}
			h.cand = h.cand[:k]
		}
		k := 0
		for _, v := range h.cand {
			if a.matchLen[v] == a.depth[v] {
				// A form ends here, and began before the stream.
				s.addSpan(0, h.n)
			}
			if a.childStart[v] < a.childStart[v+1] {
				h.cand[k] = v
				k++
			}
		}
		h.cand = h.cand[:k]
		if k == 0 {
			h.on = false
			return
		}
	}
}

// endHead stops looking at the stream's start, as it is cut there (see
// markTail): the stream so far, tail or more bytes and at least headGram
// of them, being a piece of a form, is masked whole (tail 0: never).
func (s *scanner) endHead(tail int) {
	h := &s.head
	if !h.on {
		return
	}
	h.on = false
	if tail > 0 && h.n >= int64(max(tail, headGram)) && len(h.cand) > 0 {
		s.addSpan(0, h.n)
	}
}
