// Package yamlerr turns the errors of go.yaml.in/yaml/v3 into what a person
// editing the file needs: the line the problem is on, and the reason in
// words. It is shared by the policy and server-config readers.
//
// It owns the reading of yaml/v3's error texts, including correcting their
// line numbers: yaml/v3 prints a parser error's position 0-based (one line
// early, or none at all on line 1) while it prints a scanner error's
// 1-based. It must never read files or decide what a document means.
package yamlerr

import (
	"regexp"
	"strconv"
	"strings"
)

var lineRE = regexp.MustCompile(`^line (\d+): `)

// parserProblems are the problems yaml/v3's parser (not its scanner)
// reports; their positions are printed 0-based.
var parserProblems = []string{
	"did not find expected",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// Syntax returns the 1-based line of a yaml/v3 syntax error in doc and its
// reason without the "yaml: line N:" prefix. A message without a line is on
// line 1; a problem found at the end of the document (an unclosed list) is
// on its last line that holds anything.
func Syntax(err error, doc []byte) (line int, reason string) {
	line, reason = syntax(err)
	lines := strings.Split(strings.TrimRight(string(doc), " \t\r\n"), "\n")
	if line > len(lines) {
		line = max(len(lines), 1)
	}
	return line, reason
}

func syntax(err error) (line int, reason string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line = 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
			line = n
		}
		msg = msg[len(m[0]):]
	}
	for _, p := range parserProblems {
		if strings.HasPrefix(msg, p) {
			line++ // 0-based in yaml/v3's text; "no line" was line 0
			return line, msg
		}
	}
	if line == 0 {
		line = 1
	}
	return line, msg
}

// typeRE reads one of yaml/v3's type errors:
// "line 4: cannot unmarshal !!str `fast` into float64".
var typeRE = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) (?:`(.*)` )?into (.+)$")

// Type returns the line of one of yaml/v3's type-error lines (a
// yaml.TypeError holds one per problem), what was expected in words, and
// what was written; ok is false for a line it does not know.
func Type(s string) (line int, want, got string, ok bool) {
	m := typeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, "", "", false
	}
	line, _ = strconv.Atoi(m[1])
	got = m[3]
	switch m[2] {
	case "map":
		got = "a mapping"
	case "seq":
		got = "a list"
	default:
		got = strconv.Quote(got)
	}
	return line, goType(m[4]), got, true
}

// goType names a Go type in the words of a config file.
func goType(t string) string {
	switch {
	case t == "time.Duration":
		return "a duration (e.g. 30s, 5m)"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.Contains(t, "."):
		return "a mapping"
	}
	return t
}

// Suggest returns the candidate closest to s when it is close enough to be
// a likely typo (at most 2 edits, and fewer than half of s), else "".
func Suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := Distance(s, c); d < bestD && d*2 < len(s)+1 {
			best, bestD = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance of a and b, bounded: inputs longer
// than 64 bytes are not compared (they are no typo of a key).
func Distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
