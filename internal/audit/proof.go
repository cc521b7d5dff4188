package audit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// ProofJSON is the API's proof shape: {"hashes":["base64",…]}.
type ProofJSON struct {
	Hashes []string `json:"hashes"`
}

// MarshalProof returns {"hashes":["base64",…]} for a proof.
func MarshalProof(p [][32]byte) []byte {
	pj := ProofJSON{Hashes: make([]string, len(p))}
	for i, h := range p {
		pj.Hashes[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	b, _ := json.Marshal(pj) // cannot fail: strings only
	return b
}

// maxProofHashes bounds a proof read from outside (a tree of 2^63 leaves
// needs fewer).
const maxProofHashes = 128

// UnmarshalProof parses {"hashes":["base64",…]}.
func UnmarshalProof(b []byte) ([][32]byte, error) {
	if len(b) > 64<<10 {
		return nil, errors.New("audit: proof too large")
	}
	var pj ProofJSON
	if err := json.Unmarshal(b, &pj); err != nil {
		return nil, fmt.Errorf("audit: parsing proof: %w", err)
	}
	if len(pj.Hashes) > maxProofHashes {
		return nil, errors.New("audit: proof has too many hashes")
	}
	out := make([][32]byte, len(pj.Hashes))
	for i, s := range pj.Hashes {
		h, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("audit: proof hash %d is malformed", i)
		}
		copy(out[i][:], h)
	}
	return out, nil
}

// VerifyInclusion checks that entry (its exact bytes) is at index in the
// tree of size whose root is root.
func VerifyInclusion(index, size int64, entry []byte, root [32]byte, proof [][32]byte) error {
	if index < 0 || size <= index {
		return fmt.Errorf("%w: index %d not below size %d", ErrRange, index, size)
	}
	p := make(tlog.RecordProof, len(proof))
	for i, h := range proof {
		p[i] = h
	}
	if err := tlog.CheckRecord(p, size, root, index, tlog.RecordHash(entry)); err != nil {
		return fmt.Errorf("audit: entry %d not proven in tree %d: %w", index, size, err)
	}
	return nil
}

// VerifyConsistency checks that the tree (oldSize, oldRoot) a verifier saw
// before is a prefix of the tree (newSize, newRoot), using a consistency
// proof. A smaller new tree is a rollback.
func VerifyConsistency(oldSize int64, oldRoot [32]byte, newSize int64, newRoot [32]byte, proof [][32]byte) error {
	switch {
	case oldSize < 0 || newSize < 0:
		return fmt.Errorf("%w: negative size", ErrRange)
	case newSize < oldSize:
		return fmt.Errorf("audit: log rolled back from %d to %d entries", oldSize, newSize)
	case oldSize == 0:
		return nil
	case oldSize == newSize:
		if oldRoot != newRoot {
			return fmt.Errorf("audit: tree %d has a different root than seen before", newSize)
		}
		return nil
	}
	p := make(tlog.TreeProof, len(proof))
	for i, h := range proof {
		p[i] = h
	}
	if err := tlog.CheckTree(p, newSize, newRoot, oldSize, oldRoot); err != nil {
		return fmt.Errorf("audit: tree %d is not an extension of tree %d seen before: %w", newSize, oldSize, err)
	}
	return nil
}
