package mask

// The automaton is an Aho-Corasick trie over every pattern, numbered in
// breadth-first order. States up to a depth chosen to fit denseBudget get a
// fully resolved DFA row over byte classes (the fast path); deeper states
// keep their trie edges and failure link and are walked one byte at a time
// (the slow path, reached only while a few bytes of some pattern have been
// seen). A dense row entry is either the premultiplied offset of the next
// dense row, or flagBit|state when the scanner must look closer: the next
// state is deep, ends a match, or the byte is '\r' or ESC (which start the
// normalising thread).

const (
	flagBit = 1 << 31
	// denseBudget bounds the dense table, in entries (4 bytes each).
	denseBudget = 1 << 20
	esc         = 0x1b
)

type automaton struct {
	class [256]uint8
	// rootStay: bytes that leave the root state where it is, unflagged.
	// Most text is mostly such bytes: the scanner skips them in a loop
	// without the dependent table load of a transition.
	rootStay [256]bool
	stride   uint32 // number of byte classes
	nDense   int32  // states [0, nDense) have dense rows
	dense    []uint32

	fail       []int32
	depth      []int32
	matchLen   []int32 // longest pattern ending in this state, 0 if none
	hold       []int32 // longest suffix that some pattern may still extend
	childStart []int32 // children of s are states [childStart[s], childStart[s+1])
	inByte     []byte  // the byte on the edge into a state
	maxLen     int
	minLen     int // shortest pattern; 0 if none
	skip       *skipFilter
	head       *headIndex // a form's suffix at a stream's start (head.go)
}

// build makes the automaton for patterns (non-empty, deduplicated), its
// dense table holding at most budget entries (but always the root and its
// children).
func build(patterns [][]byte, budget int) *automaton {
	// Trie with first-child/next-sibling links, in insertion numbering.
	type tnode struct {
		first, next int32
		b           byte
		term        int32
	}
	total := 1
	for _, p := range patterns {
		total += len(p)
	}
	// At most one node per pattern byte: sized once, not grown.
	nodes := make([]tnode, 1, total)
	nodes[0] = tnode{first: -1, next: -1}
	maxLen := 0
	var used [256]bool
	minLen := 0
	for _, p := range patterns {
		maxLen = max(maxLen, len(p))
		if minLen == 0 || len(p) < minLen {
			minLen = len(p)
		}
		u := int32(0)
		for _, c := range p {
			used[c] = true
			v := nodes[u].first
			for v >= 0 && nodes[v].b != c {
				v = nodes[v].next
			}
			if v < 0 {
				v = int32(len(nodes))
				nodes = append(nodes, tnode{first: -1, next: nodes[u].first, b: c})
				nodes[u].first = v
			}
			u = v
		}
		nodes[u].term = int32(len(p))
	}

	a := &automaton{maxLen: maxLen, minLen: minLen}
	// Byte classes: one per byte used by a pattern, one for '\r' and one for
	// ESC if unused, class 0 for everything else (if anything is left).
	used['\r'], used[esc] = true, true
	k := 1
	for c := 0; c < 256; c++ {
		if !used[c] {
			k = 0 // some byte is in class 0
		}
	}
	if k == 0 {
		k = 1
	} else {
		k = 0 // every byte is used: no class 0
	}
	for c := 0; c < 256; c++ {
		if used[c] {
			a.class[c] = uint8(k)
			k++
		}
	}
	a.stride = uint32(k)

	// Breadth-first renumbering; children of one node get consecutive ids.
	n := len(nodes)
	order := make([]int32, 0, n) // new id -> old id
	order = append(order, 0)
	a.childStart = make([]int32, n+1)
	a.inByte = make([]byte, n)
	a.depth = make([]int32, n)
	parent := make([]int32, n)
	var kids []int32
	for i := 0; i < len(order); i++ {
		old := order[i]
		a.childStart[i] = int32(len(order))
		// Children in byte order, for determinism.
		kids = kids[:0]
		for v := nodes[old].first; v >= 0; v = nodes[v].next {
			kids = append(kids, v)
		}
		for x := 1; x < len(kids); x++ {
			for y := x; y > 0 && nodes[kids[y]].b < nodes[kids[y-1]].b; y-- {
				kids[y], kids[y-1] = kids[y-1], kids[y]
			}
		}
		for _, v := range kids {
			id := int32(len(order))
			parent[id] = int32(i)
			a.inByte[id] = nodes[v].b
			a.depth[id] = a.depth[i] + 1
			order = append(order, v)
		}
	}
	a.childStart[n] = int32(n)

	// Dense depth: as deep as the budget allows, at least depth 1.
	a.nDense = 1
	for d := int32(1); ; d++ {
		cnt := int32(0)
		for cnt < int32(n) && a.depth[cnt] <= d {
			cnt++
		}
		if d > 1 && int(cnt)*int(a.stride) > budget {
			break
		}
		a.nDense = cnt
		if cnt == int32(n) {
			break
		}
	}

	a.fail = make([]int32, n)
	a.matchLen = make([]int32, n)
	a.hold = make([]int32, n)
	a.dense = make([]uint32, int(a.nDense)*int(a.stride))
	row := func(s int32) []uint32 { return a.dense[uint32(s)*a.stride : uint32(s+1)*a.stride] }
	// Dense rows hold plain state ids while building; encoded at the end.
	step := func(s int32, c byte) int32 {
		for s >= a.nDense {
			if v := a.child(s, c); v >= 0 {
				return v
			}
			s = a.fail[s]
		}
		return int32(row(s)[a.class[c]])
	}
	for s := int32(0); s < int32(n); s++ {
		if s > 0 {
			if p := parent[s]; p != 0 {
				a.fail[s] = step(a.fail[p], a.inByte[s])
			}
		}
		a.matchLen[s] = max(nodes[order[s]].term, a.matchLen[a.fail[s]])
		if a.childStart[s] < a.childStart[s+1] || s == 0 {
			a.hold[s] = a.depth[s]
		} else {
			a.hold[s] = a.hold[a.fail[s]]
		}
		if s < a.nDense {
			// The failure state's row, overridden by s's own edges.
			r := row(s)
			if s != 0 {
				copy(r, row(a.fail[s]))
			}
			for v := a.childStart[s]; v < a.childStart[s+1]; v++ {
				r[a.class[a.inByte[v]]] = uint32(v)
			}
		}
	}
	crClass, escClass := a.class['\r'], a.class[esc]
	for s := int32(0); s < a.nDense; s++ {
		r := row(s)
		for cl, t := range r {
			if int32(t) >= a.nDense || a.matchLen[t] > 0 || uint8(cl) == crClass || uint8(cl) == escClass {
				r[cl] = flagBit | t
			} else {
				r[cl] = t * a.stride
			}
		}
	}
	for c := range a.rootStay {
		a.rootStay[c] = a.dense[a.class[c]] == 0
	}
	var usedByPattern [256]bool
	for _, p := range patterns {
		for _, c := range p {
			usedByPattern[c] = true
		}
	}
	a.skip = buildFilter(patterns, minLen, &usedByPattern, 4*budget)
	a.head = buildHead(a, parent)
	return a
}

// child returns the child of s on byte c, or -1.
func (a *automaton) child(s int32, c byte) int32 {
	for v := a.childStart[s]; v < a.childStart[s+1]; v++ {
		if a.inByte[v] == c {
			return v
		}
	}
	return -1
}

// next is the Aho-Corasick transition from s on c.
func (a *automaton) next(s int32, c byte) int32 {
	for s >= a.nDense {
		if v := a.child(s, c); v >= 0 {
			return v
		}
		s = a.fail[s]
	}
	e := a.dense[uint32(s)*a.stride+uint32(a.class[c])]
	if e&flagBit != 0 {
		return int32(e &^ flagBit)
	}
	return int32(e / a.stride)
}

// size is about how many bytes the automaton holds.
func (a *automaton) size() int {
	n := 4*len(a.dense) + 4*(len(a.fail)+len(a.depth)+len(a.matchLen)+len(a.hold)+len(a.childStart)) + len(a.inByte)
	if a.skip != nil {
		n += 8 * len(a.skip.bits)
	}
	if a.head != nil {
		n += a.head.size()
	}
	return n
}

// suspect reports whether b may need masking: it holds a whole pattern, or
// a '\r', ESC or '\n' (maybe a wrap) that the normalising thread would
// look through, or (tail > 0) ends in the first tail or more bytes of one
// or begins with headGram bytes that a form's suffix may begin with, or
// begins as a hex dump's line does.
// It is the raw thread alone, without a scanner: no allocation.
func suspect[T string | []byte](a *automaton, b T, tail int) bool {
	if a.minLen == 0 || len(b) < a.minLen && (tail <= 0 || len(b) < tail) {
		return false
	}
	if dumpOffset(b) {
		return true // a hex dump's line (dump.go)
	}
	if tail > 0 && len(b) >= headGram && a.head != nil {
		var g uint64
		for i := 0; i < headGram; i++ {
			g = g<<8 | uint64(b[i])
		}
		if a.head.has(g) {
			return true
		}
	}
	g := int32(0)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '\r' || c == esc || c == '\n' {
			return true
		}
		g = a.next(g, c)
		if a.matchLen[g] > 0 {
			return true
		}
	}
	return tail > 0 && int(a.hold[g]) >= tail
}
