package token

import (
	"bytes"
	"strings"
)

// Minted PostgreSQL passwords ("mfyp_…") have the tokens' shape: the
// prefix, 30 random base62 characters and the 6-character base62 CRC-32 of
// those 30. The checksum lets the scanner and a leak report tell a password
// mayfly minted from a look-alike without asking anyone; it is not a secret
// and proves nothing about who holds the password.
const (
	// PasswordPrefix starts every password mayfly mints for a database role.
	PasswordPrefix = "mfyp_"
	// PasswordLen is the whole length of a minted password.
	PasswordLen = len(PasswordPrefix) + BodyLen + ChecksumLen
)

// NewPassword returns a fresh minted password: about 178 bits from
// crypto/rand, in the checksummed form. Its characters need no quoting in a
// SQL literal, an identifier or a URL.
func NewPassword() (string, error) {
	// New(Job) draws the body and checksum; only the prefix differs.
	t, err := New(Job)
	if err != nil {
		return "", err
	}
	return PasswordPrefix + t[len(JobPrefix):], nil
}

// ParsePassword reports whether s is a well-formed minted password with a
// valid checksum. The error never contains s.
func ParsePassword(s string) error {
	if len(s) != PasswordLen || !strings.HasPrefix(s, PasswordPrefix) {
		return ErrFormat
	}
	body := s[len(PasswordPrefix):]
	for i := 0; i < len(body); i++ {
		if !isBase62(body[i]) {
			return ErrFormat
		}
	}
	if sum := checksum(body[:BodyLen]); string(sum[:]) != body[BodyLen:] {
		return ErrChecksum
	}
	return nil
}

// PasswordHint is Hint for a minted password: its prefix and four
// characters of its body.
func PasswordHint(s string) string {
	if strings.HasPrefix(s, PasswordPrefix) && len(s) >= len(PasswordPrefix)+4 {
		return s[:len(PasswordPrefix)+4] + "…"
	}
	return "…"
}

var passwordPrefix = []byte(PasswordPrefix)

// PasswordMatch is a checksum-valid minted password found in a text.
type PasswordMatch struct {
	Offset   int // byte offset of its first character
	Password string
}

// FindPasswords returns every checksum-valid minted password in b, in
// order, whatever is around it, as Find does.
func FindPasswords(b []byte) []PasswordMatch {
	var out []PasswordMatch
	i := 0
	for {
		j := bytes.Index(b[i:], passwordPrefix)
		if j < 0 {
			return out
		}
		start := i + j
		i = start + len(passwordPrefix)
		end := start + PasswordLen
		if end > len(b) {
			continue
		}
		cand := string(b[start:end])
		if ParsePassword(cand) != nil {
			continue
		}
		out = append(out, PasswordMatch{Offset: start, Password: cand})
		i = end
	}
}
