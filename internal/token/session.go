package token

import "bytes"

// Admin session values (a human's SSO sign-in, made and checked by the
// authority) are "mfys_" and 43 base64url characters: 32 random bytes, no
// checksum. This package knows their shape only to keep them out of logs
// and audit entries (Redact): a caller may pass one where a session's id
// belongs, and a refused request is recorded with its path.
const (
	// SessionPrefix starts every admin session value.
	SessionPrefix = "mfys_"
	// SessionLen is the whole length of an admin session value.
	SessionLen = len(SessionPrefix) + 43
)

var sessionPrefix = []byte(SessionPrefix)

// findSessions returns the offsets of every session-shaped value in b:
// the prefix and 43 base64url characters, whatever is around them (a
// look-alike is redacted too; it costs a hint in place of random text).
func findSessions(b []byte) []int {
	var out []int
	i := 0
	for {
		j := bytes.Index(b[i:], sessionPrefix)
		if j < 0 {
			return out
		}
		start := i + j
		i = start + len(sessionPrefix)
		if start+SessionLen > len(b) || !base64URL(b[i:start+SessionLen]) {
			continue
		}
		out = append(out, start)
		i = start + SessionLen
	}
}

func base64URL(b []byte) bool {
	for _, c := range b {
		if !isBase62(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// sessionHint is Hint for a session value: its prefix and four characters.
func sessionHint(s []byte) string {
	return string(s[:len(SessionPrefix)+4]) + "…"
}
