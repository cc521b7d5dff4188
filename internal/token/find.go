package token

import (
	"bytes"
	"slices"
)

// Match is a checksum-valid mayfly token found in a text.
type Match struct {
	Kind   Kind
	Offset int // byte offset of the token's first character
	Token  string
}

var prefixStem = []byte("mfy")

// Find returns every checksum-valid mayfly token in b, in order, whatever
// is around it: glued to letters or digits ("x<token>y") or after an escape
// that ends in one (JSON's "\n" or "\u003c", a URL's "%0A"). A reader cuts
// a whole token out of any text, and the checksum makes a chance match
// negligible, so the scanner, leak reports and redaction all take it.
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
		var n int
		switch {
		case bytes.HasPrefix(b[start:], []byte(AdminPrefix)):
			n = AdminLen
		case bytes.HasPrefix(b[start:], []byte(JobPrefix)):
			n = JobLen
		default:
			continue
		}
		if start+n > len(b) || !allBase62(b[start+n-BodyLen-ChecksumLen:start+n]) {
			// A hint ("mfy_abcd…", in every gateway entry) or a prefix in
			// text: not worth a string.
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

// Redact returns b with every checksum-valid mayfly token and minted
// password, and every admin session value and GitHub-token-shaped value,
// replaced by its hint, or b
// itself when it holds none. It is how
// logs and audit entries keep whole secrets of mayfly's own formats out
// whatever a caller passes them.
func Redact(b []byte) []byte {
	type span struct {
		off, n int
		hint   string
	}
	var ss []span
	for _, m := range Find(b) {
		ss = append(ss, span{m.Offset, len(m.Token), Hint(m.Token)})
	}
	for _, m := range FindPasswords(b) {
		ss = append(ss, span{m.Offset, len(m.Password), PasswordHint(m.Password)})
	}
	for _, off := range findSessions(b) {
		ss = append(ss, span{off, SessionLen, sessionHint(b[off : off+SessionLen])})
	}
	for _, off := range findGitHub(b) {
		ss = append(ss, span{off, gitHubLen, gitHubHint(b[off : off+gitHubLen])})
	}
	if len(ss) == 0 {
		return b
	}
	// The formats cannot overlap: each starts with its own prefix, and
	// "mfyp_" and "mfys_" are neither "mfy_" nor "mfya_" nor each other
	// ("gh?_" could stand inside one: the earlier span wins below).
	slices.SortFunc(ss, func(x, y span) int { return x.off - y.off })
	out := make([]byte, 0, len(b))
	last := 0
	for _, sp := range ss {
		if sp.off < last {
			// Overlapping the one before (a chance of 62^-6 between
			// mayfly's formats; a GitHub-shaped run may hold one): its
			// rest is hidden too.
			last = max(last, sp.off+sp.n)
			continue
		}
		out = append(out, b[last:sp.off]...)
		out = append(out, sp.hint...)
		last = sp.off + sp.n
	}
	return append(out, b[last:]...)
}

func allBase62(b []byte) bool {
	for _, c := range b {
		if !isBase62(c) {
			return false
		}
	}
	return true
}

// Clip bounds text to at most limit bytes without cutting a credential in
// two: redaction (Redact) replaces a whole token or password by its hint,
// but one cut in its checksum is none to it, yet its characters before the
// checksum give it whole (the checksum follows from them). So a run of a
// credential's characters across the limit is left out whole. Callers
// clip before they redact.
func Clip(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	end := limit
	if credChar(s[end]) {
		for end > 0 && credChar(s[end-1]) {
			end--
		}
	}
	return s[:end]
}

// credChar: a character of a token, session value, minted password or
// GitHub installation token (base64url and a JWT's dots included).
func credChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.'
}
