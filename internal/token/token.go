// Package token owns the format of mayfly's bearer tokens: job tokens
// ("mfy_") and admin tokens ("mfya_"), and of the passwords it mints for
// database roles ("mfyp_", same shape). It generates them, checks their
// checksum, finds them in text, redacts them to hints, bounds text without
// cutting one in two (Clip) and derives the keyed hash under which a
// server stores them. It also knows the shape of admin session values
// ("mfys_") and of GitHub's tokens ("ghs_"…, which mayfly mints for jobs),
// to redact them alike.
//
// It never stores a token and knows nothing of HTTP or storage: a checksum
// tells a real mayfly token from a look-alike offline, it authenticates
// nothing.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"strings"
	"sync"
	"unsafe"
)

// Kind tells a job token from an admin token.
type Kind int

const (
	// Invalid is the zero Kind: not a mayfly token.
	Invalid Kind = iota
	// Job is a just-in-time job token, "mfy_…".
	Job
	// Admin is an admin token, "mfya_…".
	Admin
)

const (
	// JobPrefix starts every job token.
	JobPrefix = "mfy_"
	// AdminPrefix starts every admin token.
	AdminPrefix = "mfya_"
	// BodyLen is the number of random base62 characters in a token.
	BodyLen = 30
	// ChecksumLen is the number of base62 characters of CRC-32 checksum.
	ChecksumLen = 6
	// JobLen and AdminLen are the whole lengths of each kind.
	JobLen   = len(JobPrefix) + BodyLen + ChecksumLen
	AdminLen = len(AdminPrefix) + BodyLen + ChecksumLen
)

// Alphabet is the base62 alphabet, in the order SPEC section 2 fixes.
const Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func (k Kind) String() string {
	switch k {
	case Job:
		return "job"
	case Admin:
		return "admin"
	}
	return "invalid"
}

func (k Kind) prefix() string {
	if k == Admin {
		return AdminPrefix
	}
	return JobPrefix
}

// Errors returned by Parse.
var (
	ErrFormat   = errors.New("token: not a mayfly token")
	ErrChecksum = errors.New("token: checksum mismatch")
)

// New returns a fresh token of kind k with 30 characters (about 178 bits)
// of randomness from crypto/rand.
func New(k Kind) (string, error) {
	if k != Job && k != Admin {
		return "", fmt.Errorf("token: new: unknown kind %d", k)
	}
	var body [BodyLen]byte
	// Rejection sampling keeps every character uniform: 248 is the largest
	// multiple of 62 that fits a byte.
	var buf [64]byte
	n := 0
	for n < BodyLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("token: new: reading randomness: %w", err)
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			body[n] = Alphabet[b%62]
			n++
			if n == BodyLen {
				break
			}
		}
	}
	return k.prefix() + string(body[:]) + Checksum(string(body[:])), nil
}

// Checksum returns the 6-character base62 CRC-32 (IEEE) of body,
// left-padded with '0'.
func Checksum(body string) string {
	sum := checksum(body)
	return string(sum[:])
}

// checksum is Checksum without allocating: the gateway checks one per
// request, and the scanner one per candidate.
func checksum(body string) [ChecksumLen]byte {
	// crc32 only reads the bytes: no copy of the string.
	c := crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(body), len(body)))
	var out [ChecksumLen]byte
	for i := ChecksumLen - 1; i >= 0; i-- {
		out[i] = Alphabet[c%62]
		c /= 62
	}
	return out
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// Parse reports the kind of s, or an error when s is not a well-formed
// mayfly token with a valid checksum. The error never contains s.
func Parse(s string) (Kind, error) {
	var k Kind
	var body string
	switch {
	case len(s) == AdminLen && strings.HasPrefix(s, AdminPrefix):
		k, body = Admin, s[len(AdminPrefix):]
	case len(s) == JobLen && strings.HasPrefix(s, JobPrefix):
		k, body = Job, s[len(JobPrefix):]
	default:
		return Invalid, ErrFormat
	}
	for i := 0; i < len(body); i++ {
		if !isBase62(body[i]) {
			return Invalid, ErrFormat
		}
	}
	if sum := checksum(body[:BodyLen]); string(sum[:]) != body[BodyLen:] {
		return Invalid, ErrChecksum
	}
	return k, nil
}

// Hint returns a redacted form of a token that is safe to log and show:
// its prefix and the first four characters of its body, then "…".
// Anything that is not a well-formed token is reduced further.
func Hint(s string) string {
	switch {
	case strings.HasPrefix(s, AdminPrefix) && len(s) >= len(AdminPrefix)+4:
		return s[:len(AdminPrefix)+4] + "…"
	case strings.HasPrefix(s, JobPrefix) && len(s) >= len(JobPrefix)+4:
		return s[:len(JobPrefix)+4] + "…"
	}
	return "…"
}

// Hasher derives the keyed hash under which a server stores a token, so
// that a copy of the database cannot be turned back into usable tokens.
type Hasher struct {
	key  []byte
	macs sync.Pool // of *keyedMAC, reset for reuse
}

// keyedMAC is a keyed HMAC with room for its sum: summed into a local
// array, a sum escapes through the hash.Hash interface (an allocation
// per token looked up).
type keyedMAC struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewHasher returns a Hasher keyed with key, which must be at least 32
// bytes of secret randomness.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < 32 {
		return nil, errors.New("token: hash key shorter than 32 bytes")
	}
	return &Hasher{key: append([]byte(nil), key...)}, nil
}

// Sum returns HMAC-SHA-256(key, token).
func (h *Hasher) Sum(tok string) [32]byte {
	m, ok := h.macs.Get().(*keyedMAC)
	if !ok {
		m = &keyedMAC{h: hmac.New(sha256.New, h.key)}
	}
	m.h.Write(unsafe.Slice(unsafe.StringData(tok), len(tok))) // only read
	m.h.Sum(m.sum[:0])
	out := m.sum
	m.h.Reset()
	h.macs.Put(m)
	return out
}

// Equal compares two hashes in constant time.
func Equal(a, b [32]byte) bool {
	return hmac.Equal(a[:], b[:])
}
