package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// MaxPageSize bounds Entries' limit.
const MaxPageSize = 10000

// storeHashReader reads stored hashes from the store, one query per call.
func storeHashReader(ctx context.Context, r Reader) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		hs, err := r.AuditHashes(ctx, idx)
		if err != nil {
			return nil, err
		}
		if len(hs) != len(idx) {
			return nil, fmt.Errorf("audit: store returned %d of %d hashes", len(hs), len(idx))
		}
		out := make([]tlog.Hash, len(hs))
		for i, h := range hs {
			out[i] = h
		}
		return out, nil
	})
}

// durableSize returns the size to check requests against: this node's
// view, refreshed from the store when a request goes beyond it (another
// node may have appended).
func (l *Log) durableSize(ctx context.Context, want int64) (int64, error) {
	size := l.Size()
	if want <= size {
		return size, nil
	}
	s, err := l.st.AuditSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit: reading log size: %w", err)
	}
	return s, nil
}

// Entries returns up to limit entries' exact bytes from index start, in
// index order.
func (l *Log) Entries(ctx context.Context, start int64, limit int) ([][]byte, error) {
	if start < 0 || limit < 0 {
		return nil, fmt.Errorf("%w: start %d limit %d", ErrRange, start, limit)
	}
	if limit == 0 {
		return nil, nil
	}
	if limit > MaxPageSize {
		limit = MaxPageSize
	}
	es, err := l.st.AuditEntries(ctx, start, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: reading entries from %d: %w", start, err)
	}
	return es, nil
}

// InclusionProof proves that the entry at index is in the tree of the
// given size (RFC 6962 audit path, leaf to root).
func (l *Log) InclusionProof(ctx context.Context, index, size int64) ([][32]byte, error) {
	if index < 0 || size <= index {
		return nil, fmt.Errorf("%w: index %d not below size %d", ErrRange, index, size)
	}
	cur, err := l.durableSize(ctx, size)
	if err != nil {
		return nil, err
	}
	if size > cur {
		return nil, fmt.Errorf("%w: size %d beyond the log's %d", ErrRange, size, cur)
	}
	p, err := tlog.ProveRecord(size, index, storeHashReader(ctx, l.st))
	if err != nil {
		return nil, fmt.Errorf("audit: proving entry %d in %d: %w", index, size, err)
	}
	return hashesOf(p), nil
}

// ConsistencyProof proves that the tree of size oldSize is a prefix of the tree
// of size newSize (RFC 6962). It is empty when oldSize is 0 or equals newSize.
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize int64) ([][32]byte, error) {
	if oldSize < 0 || newSize < oldSize {
		return nil, fmt.Errorf("%w: old %d new %d", ErrRange, oldSize, newSize)
	}
	cur, err := l.durableSize(ctx, newSize)
	if err != nil {
		return nil, err
	}
	if newSize > cur {
		return nil, fmt.Errorf("%w: size %d beyond the log's %d", ErrRange, newSize, cur)
	}
	if oldSize == 0 || oldSize == newSize {
		return [][32]byte{}, nil
	}
	p, err := tlog.ProveTree(newSize, oldSize, storeHashReader(ctx, l.st))
	if err != nil {
		return nil, fmt.Errorf("audit: proving %d consistent with %d: %w", oldSize, newSize, err)
	}
	return hashesOf(p), nil
}

// TreeHash returns the root hash of the tree of the given size, from the
// stored hashes.
func (l *Log) TreeHash(ctx context.Context, size int64) ([32]byte, error) {
	cur, err := l.durableSize(ctx, size)
	if err != nil {
		return [32]byte{}, err
	}
	if size < 0 || size > cur {
		return [32]byte{}, fmt.Errorf("%w: size %d beyond the log's %d", ErrRange, size, cur)
	}
	h, err := tlog.TreeHash(size, storeHashReader(ctx, l.st))
	if err != nil {
		return [32]byte{}, fmt.Errorf("audit: tree hash at %d: %w", size, err)
	}
	return h, nil
}

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
