package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// MaxCheckpointSize bounds a signed checkpoint note accepted from outside.
const MaxCheckpointSize = 16 << 10

// DefaultOrigin is the checkpoint origin (and key name) mayfly uses unless
// configured otherwise.
const DefaultOrigin = "mayfly.local/audit"

// GenerateKey returns a new Ed25519 note signer key and its verifier key,
// both named origin (the checkpoint origin line).
func GenerateKey(origin string) (signerKey, verifierKey string, err error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("audit: generating checkpoint key %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// verifierKeyFor derives the verifier key from a note signer key
// ("PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>").
func verifierKeyFor(skey string) (string, error) {
	bad := errors.New("audit: malformed signer key")
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return "", bad
	}
	// The name and hash contain no '+'; the base64 key may.
	name, rest, _ := strings.Cut(rest, "+")
	_, key64, _ := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.DecodeString(key64)
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != 1 {
		return "", bad
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return "", fmt.Errorf("audit: deriving verifier key: %w", err)
	}
	return vkey, nil
}

// VerifierKeyFor returns the verifier key that belongs to a signer key.
func VerifierKeyFor(signerKey string) (string, error) { return verifierKeyFor(signerKey) }

// CheckVerifierKey reports whether k is a note verifier key
// (NAME+HASH+KEY, the hash matching), as GenerateKey makes them.
func CheckVerifierKey(k string) error {
	if _, err := note.NewVerifier(k); err != nil {
		return fmt.Errorf("audit: reading verifier key: %w", err)
	}
	return nil
}

// FormatCheckpoint returns the unsigned body of a C2SP tlog-checkpoint:
// origin, tree size and base64 root hash, one per line.
func FormatCheckpoint(origin string, size int64, root [32]byte) []byte {
	var b bytes.Buffer
	b.WriteString(origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatInt(size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(root[:]))
	b.WriteByte('\n')
	return b.Bytes()
}

// ParseCheckpoint checks a signed C2SP checkpoint note against verifierKey
// and returns its tree size and root hash. The origin line must equal the
// key's name; extension lines are allowed and ignored.
func ParseCheckpoint(text []byte, verifierKey string) (size int64, root [32]byte, err error) {
	if len(text) > MaxCheckpointSize {
		return 0, root, fmt.Errorf("audit: checkpoint of %d bytes exceeds %d", len(text), MaxCheckpointSize)
	}
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return 0, root, fmt.Errorf("audit: reading verifier key: %w", err)
	}
	n, err := note.Open(text, note.VerifierList(v))
	var unsigned *note.UnverifiedNoteError
	if errors.As(err, &unsigned) {
		// Say which key: the usual cause is a key that is not the log's.
		return 0, root, fmt.Errorf("audit: checkpoint is not signed by the verifier key %s (the log's key is another, or the checkpoint was altered): %w", verifierKey, err)
	}
	if err != nil {
		return 0, root, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	return parseCheckpointBody(n.Text, v.Name())
}

func parseCheckpointBody(text, origin string) (size int64, root [32]byte, err error) {
	lines := strings.Split(text, "\n")
	// text ends with "\n", so the last element is empty.
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return 0, root, errors.New("audit: malformed checkpoint: fewer than three lines")
	}
	if lines[0] != origin {
		return 0, root, fmt.Errorf("audit: checkpoint origin %q is not the key's %q", lines[0], origin)
	}
	s := lines[1]
	if s == "" || len(s) > 19 || (s[0] == '0' && len(s) > 1) {
		return 0, root, fmt.Errorf("audit: malformed checkpoint size %q", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, root, fmt.Errorf("audit: malformed checkpoint size %q", s)
		}
	}
	size, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, root, fmt.Errorf("audit: malformed checkpoint size %q", s)
	}
	h, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(h) != len(root) {
		return 0, root, errors.New("audit: malformed checkpoint root hash")
	}
	copy(root[:], h)
	for _, ext := range lines[3 : len(lines)-1] {
		if ext == "" {
			return 0, root, errors.New("audit: malformed checkpoint: empty extension line")
		}
	}
	return size, root, nil
}
