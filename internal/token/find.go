package token

import "bytes"

// Match is a checksum-valid mayfly token found in a text.
type Match struct {
	Kind   Kind
	Offset int // byte offset of the token's first character
	Token  string
}

var prefixStem = []byte("mfy")

// Find returns every checksum-valid mayfly token in b, in order. A token
// must not be glued to other base62 characters on either side, so a
// longer random string that happens to contain one is not reported.
func Find(b []byte) []Match {
	var out []Match
	i := 0
	for {
		j := bytes.Index(b[i:], prefixStem)
		if j < 0 {
			return out
		}
		start := i + j
		i = start + len(prefixStem)
		if start > 0 && isBase62(b[start-1]) {
			continue
		}
		var n int
		switch {
		case bytes.HasPrefix(b[start:], []byte(AdminPrefix)):
			n = AdminLen
		case bytes.HasPrefix(b[start:], []byte(JobPrefix)):
			n = JobLen
		default:
			continue
		}
		if start+n > len(b) || (start+n < len(b) && isBase62(b[start+n])) {
			continue
		}
		cand := string(b[start : start+n])
		k, err := Parse(cand)
		if err != nil {
			continue
		}
		out = append(out, Match{Kind: k, Offset: start, Token: cand})
		i = start + n
	}
}

// Redact returns b with every checksum-valid mayfly token replaced by its
// hint, or b itself when it holds none. It is how logs and audit entries
// keep whole tokens out whatever a caller passes them.
func Redact(b []byte) []byte {
	ms := Find(b)
	if len(ms) == 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	last := 0
	for _, m := range ms {
		out = append(out, b[last:m.Offset]...)
		out = append(out, Hint(m.Token)...)
		last = m.Offset + len(m.Token)
	}
	return append(out, b[last:]...)
}
