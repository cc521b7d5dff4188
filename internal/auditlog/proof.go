package auditlog

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// MaxPageSize bounds Entries' limit.
const MaxPageSize = 10000

// MaxPageBytes bounds the bytes of the entries one page of Entries holds:
// MaxPageSize entries of up to audit.MaxEntrySize would be 640 MiB, held
// in memory per request. A page always holds its first entry, so a
// caller reading on from start+len(page) always gets further.
const MaxPageBytes = 8 << 20

// storeHashReader reads stored hashes from the store, one query per call.
func storeHashReader(ctx context.Context, r audit.Reader) tlog.HashReader {
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
		return nil, fmt.Errorf("%w: start %d limit %d", audit.ErrRange, start, limit)
	}
	if limit == 0 {
		return nil, nil
	}
	if limit > MaxPageSize {
		limit = MaxPageSize
	}
	if sc, ok := l.st.(audit.EntryScanner); ok {
		// The store's rows one at a time: what a page leaves out is
		// never held.
		es, err := audit.ReadEntries(ctx, sc, start, limit, MaxPageBytes)
		if err != nil {
			return nil, fmt.Errorf("audit: reading entries from %d: %w", start, err)
		}
		return es, nil
	}
	es, err := l.st.AuditEntries(ctx, start, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: reading entries from %d: %w", start, err)
	}
	n := 0
	for i, e := range es {
		if n += len(e); i > 0 && n > MaxPageBytes {
			return es[:i], nil
		}
	}
	return es, nil
}

// InclusionProof proves that the entry at index is in the tree of the
// given size (RFC 6962 audit path, leaf to root).
func (l *Log) InclusionProof(ctx context.Context, index, size int64) ([][32]byte, error) {
	if index < 0 || size <= index {
		return nil, fmt.Errorf("%w: index %d not below size %d", audit.ErrRange, index, size)
	}
	cur, err := l.durableSize(ctx, size)
	if err != nil {
		return nil, err
	}
	if size > cur {
		return nil, fmt.Errorf("%w: size %d beyond the log's %d", audit.ErrRange, size, cur)
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
		return nil, fmt.Errorf("%w: old %d new %d", audit.ErrRange, oldSize, newSize)
	}
	cur, err := l.durableSize(ctx, newSize)
	if err != nil {
		return nil, err
	}
	if newSize > cur {
		return nil, fmt.Errorf("%w: size %d beyond the log's %d", audit.ErrRange, newSize, cur)
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
		return [32]byte{}, fmt.Errorf("%w: size %d beyond the log's %d", audit.ErrRange, size, cur)
	}
	h, err := tlog.TreeHash(size, storeHashReader(ctx, l.st))
	if err != nil {
		return [32]byte{}, fmt.Errorf("audit: tree hash at %d: %w", size, err)
	}
	return h, nil
}
