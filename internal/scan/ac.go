package scan

import "errors"

// acMatcher is an Aho-Corasick automaton compiled to a dense DFA over
// ASCII-case-folded bytes: one table lookup per input byte, no branches
// except on states that end a keyword. States are renumbered so that
// every state with output is >= outStart, which makes the hot loop a
// single comparison.
type acMatcher struct {
	delta    []uint16 // state<<8 | byte -> next state
	outStart int
	outs     [][]int32 // indexed by state-outStart: keyword indices ending here
	lens     []int     // keyword lengths
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 32
	}
	return c
}

func newACMatcher(words []string) (*acMatcher, error) {
	type node struct {
		next [256]int32
		fail int32
		out  []int32
	}
	nodes := []*node{{}}
	newNode := func() int32 {
		n := &node{}
		for i := range n.next {
			n.next[i] = -1
		}
		nodes = append(nodes, n)
		return int32(len(nodes) - 1)
	}
	for i := range nodes[0].next {
		nodes[0].next[i] = -1
	}
	lens := make([]int, len(words))
	for wi, w := range words {
		lens[wi] = len(w)
		s := int32(0)
		for i := 0; i < len(w); i++ {
			c := lower(w[i])
			if nodes[s].next[c] < 0 {
				ns := newNode()
				nodes[s].next[c] = ns
			}
			s = nodes[s].next[c]
		}
		nodes[s].out = append(nodes[s].out, int32(wi))
	}
	if len(nodes) >= 1<<16 {
		return nil, errors.New("scan: too many keywords")
	}
	// Breadth-first: failure links and full transitions.
	queue := []int32{}
	for c := 0; c < 256; c++ {
		if t := nodes[0].next[c]; t >= 0 {
			nodes[t].fail = 0
			queue = append(queue, t)
		} else {
			nodes[0].next[c] = 0
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		f := nodes[s].fail
		nodes[s].out = append(nodes[s].out, nodes[f].out...)
		for c := 0; c < 256; c++ {
			t := nodes[s].next[c]
			if t >= 0 {
				nodes[t].fail = nodes[f].next[c]
				queue = append(queue, t)
			} else {
				nodes[s].next[c] = nodes[f].next[c]
			}
		}
	}
	// Renumber: states without output first.
	perm := make([]int, len(nodes))
	n := 0
	for i, nd := range nodes {
		if len(nd.out) == 0 {
			perm[i] = n
			n++
		}
	}
	outStart := n
	outs := make([][]int32, 0, len(nodes)-n)
	for i, nd := range nodes {
		if len(nd.out) > 0 {
			perm[i] = n
			n++
			outs = append(outs, nd.out)
		}
	}
	delta := make([]uint16, len(nodes)<<8)
	for i, nd := range nodes {
		row := perm[i] << 8
		for c := 0; c < 256; c++ {
			delta[row|c] = uint16(perm[nd.next[lower(byte(c))]])
		}
	}
	return &acMatcher{delta: delta, outStart: outStart, outs: outs, lens: lens}, nil
}

// each calls fn(keyword, end) for every keyword occurrence in b, end being
// the index just past the occurrence, in order of end.
func (m *acMatcher) each(b []byte, fn func(kw int, end int)) {
	delta := m.delta
	outStart := m.outStart
	s := 0
	for i := 0; i < len(b); i++ {
		s = int(delta[s<<8|int(b[i])])
		if s >= outStart {
			for _, kw := range m.outs[s-outStart] {
				fn(int(kw), i+1)
			}
		}
	}
}
