package console

import "strings"

// diffLine is one line of a line diff: Op is ' ' (in both), '-' (only in
// the old text) or '+' (only in the new).
type diffLine struct {
	Op   string
	Text string
	Old  int // line number in the old text (0: none)
	New  int // line number in the new text (0: none)
}

// maxDiffCells bounds the work of one diff (the longest-common-subsequence
// table of what differs after the common head and tail are set aside):
// beyond it the differing middle is shown as removed, then added.
const maxDiffCells = 4 << 20

// lineDiff returns a minimal line diff of a and b (longest common
// subsequence), common head and tail included.
func lineDiff(a, b string) []diffLine {
	x, y := splitLines(a), splitLines(b)
	head := 0
	for head < len(x) && head < len(y) && x[head] == y[head] {
		head++
	}
	tail := 0
	for tail < len(x)-head && tail < len(y)-head && x[len(x)-1-tail] == y[len(y)-1-tail] {
		tail++
	}
	var out []diffLine
	for i := 0; i < head; i++ {
		out = append(out, diffLine{" ", x[i], i + 1, i + 1})
	}
	mx, my := x[head:len(x)-tail], y[head:len(y)-tail]
	if len(mx)*len(my) > maxDiffCells {
		for i, s := range mx {
			out = append(out, diffLine{"-", s, head + i + 1, 0})
		}
		for j, s := range my {
			out = append(out, diffLine{"+", s, 0, head + j + 1})
		}
	} else {
		// lcs[i][j]: the LCS length of mx[i:] and my[j:].
		n, m := len(mx), len(my)
		lcs := make([]int32, (n+1)*(m+1))
		at := func(i, j int) int32 { return lcs[i*(m+1)+j] }
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if mx[i] == my[j] {
					lcs[i*(m+1)+j] = at(i+1, j+1) + 1
				} else {
					lcs[i*(m+1)+j] = max(at(i+1, j), at(i, j+1))
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && mx[i] == my[j]:
				out = append(out, diffLine{" ", mx[i], head + i + 1, head + j + 1})
				i++
				j++
			case i < n && (j == m || at(i+1, j) >= at(i, j+1)):
				out = append(out, diffLine{"-", mx[i], head + i + 1, 0})
				i++
			default:
				out = append(out, diffLine{"+", my[j], 0, head + j + 1})
				j++
			}
		}
	}
	for k := 0; k < tail; k++ {
		i, j := len(x)-tail+k, len(y)-tail+k
		out = append(out, diffLine{" ", x[i], i + 1, j + 1})
	}
	return out
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	s = strings.TrimSuffix(s, "\n")
	return strings.Split(s, "\n")
}

// changed reports whether a diff has any change.
func changed(d []diffLine) bool {
	for _, l := range d {
		if l.Op != " " {
			return true
		}
	}
	return false
}
