package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
)

// KeySize is the size of every key this package handles: the master key,
// key-encryption keys and data keys are all AES-256 keys.
const KeySize = 32

// sealOverhead is what AES-256-GCM with a random nonce adds to a plaintext:
// the 12-byte nonce in front and the 16-byte tag behind.
const sealOverhead = 12 + 16

// errOpen is the one error every failed unseal returns: it never says
// which byte was wrong, and it never carries key or plaintext material.
var errOpen = errors.New("sealed bytes do not open (tampered, swapped or wrong key)")

// newAEAD returns AES-256-GCM with random 96-bit nonces (crypto/cipher's
// NewGCMWithRandomNonce): Seal puts the nonce in front of the ciphertext and
// Open takes it from there. A random nonce is safe for about 2^32 seals per
// key; data keys seal one value, KEKs one data key per secret version (and
// re-wrap), the master key one KEK per keyring version, all far below that.
//
// The returned AEAD holds the expanded key schedule; the caller should zero
// key once it no longer needs it. (Best effort: the Go runtime may have
// copied the bytes, and the schedule inside the AEAD lives until it is
// garbage collected; Go offers no way to wipe it.)
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// seal encrypts plaintext under a, bound to aad: nonce || ciphertext || tag.
func seal(a cipher.AEAD, plaintext, aad []byte) []byte {
	return a.Seal(make([]byte, 0, len(plaintext)+sealOverhead), nil, plaintext, aad)
}

// open reverses seal; any failure (short input, wrong key, wrong aad, a
// flipped bit) is errOpen.
func open(a cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < sealOverhead {
		return nil, errOpen
	}
	pt, err := a.Open(nil, nil, sealed, aad)
	if err != nil {
		return nil, errOpen
	}
	return pt, nil
}

// randomKey returns KeySize fresh random bytes.
func randomKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k) // never fails (crypto/rand panics rather than return short)
	return k
}

// zero overwrites b: best effort, see newAEAD.
func zero(b []byte) { clear(b) }

// keyringAAD binds a sealed KEK to its keyring version.
func keyringAAD(version int) []byte {
	return []byte("mayfly keyring v" + strconv.Itoa(version))
}

// valueAAD binds a sealed value to its record identity, so a ciphertext
// copied into another name's or version's row does not open there.
func valueAAD(name string, version int) []byte {
	b := make([]byte, 0, 32+len(name))
	b = append(b, "mayfly secret\x00"...)
	b = append(b, name...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(version), 10)
	return b
}

// dekAAD binds a wrapped data key to its record identity and to the
// keyring version that wraps it.
func dekAAD(name string, version, kekVersion int) []byte {
	b := make([]byte, 0, 40+len(name))
	b = append(b, "mayfly dek\x00"...)
	b = append(b, name...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(version), 10)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(kekVersion), 10)
	return b
}
