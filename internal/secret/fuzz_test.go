package secret

import (
	"bytes"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// fuzzKEK is a fixed keyring version for fuzzing record opening.
func fuzzKEK(t testing.TB) *kek {
	a, err := newAEAD(bytes.Repeat([]byte{42}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return &kek{version: 1, aead: a}
}

// FuzzOpenSealed: whatever bytes sit in a row's wrapped_dek and ciphertext
// (and whatever name and version it claims), opening never panics and
// never succeeds unless the bytes are the genuine sealed record.
func FuzzOpenSealed(f *testing.F) {
	k := fuzzKEK(f)
	good := sealRecord(k, "gh", 3, []byte("value"), time.Now())
	f.Add(good.WrappedDEK, good.Ciphertext, "gh", 3)
	f.Add(good.WrappedDEK, good.Ciphertext, "gh", 4)
	f.Add(good.WrappedDEK, good.Ciphertext, "gH", 3)
	f.Add([]byte{}, []byte{}, "", 0)
	f.Add(make([]byte, 27), make([]byte, 28), "x", 1)
	f.Add(good.Ciphertext, good.WrappedDEK, "gh", 3)
	f.Fuzz(func(t *testing.T, wrapped, ct []byte, name string, version int) {
		rec := store.Secret{Name: name, Version: version, KEKVersion: 1, WrappedDEK: wrapped, Ciphertext: ct}
		val, err := openRecordWith(k, rec)
		if err == nil {
			// Only records this test sealed open (fuzz workers seal their own
			// copy of good, with other random nonces): they must open to
			// their own identity and value.
			if name != good.Name || version != good.Version || string(val) != "value" {
				t.Fatalf("forged record opened as %q v%d: %q", name, version, val)
			}
			return
		}
		// The keyring layer too: random bytes as a sealed KEK.
		if _, err := open(k.aead, ct, keyringAAD(version)); err == nil {
			t.Fatal("random bytes opened as a keyring version")
		}
	})
}

// FuzzParseMasterKey: the master key parser (outside input: a file or an
// environment variable) never panics and only accepts 32-byte keys.
func FuzzParseMasterKey(f *testing.F) {
	f.Add([]byte("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"))
	f.Add([]byte("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"))
	f.Add([]byte(""))
	f.Add([]byte("===="))
	f.Add([]byte(" \t\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		key, err := parseMasterKey(raw)
		if err == nil && len(key) != KeySize {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
		if err != nil && key != nil {
			t.Fatal("key returned with an error")
		}
	})
}
