package audit

import (
	"context"
	"errors"
	"io/fs"
)

// ErrRange is wrapped by proof and read errors for sizes or indexes outside
// the log.
var ErrRange = errors.New("audit: index or size out of range")

// Reader is what reading and verifying a stored log need.
type Reader interface {
	AuditSize(ctx context.Context) (int64, error)
	AuditEntries(ctx context.Context, start int64, limit int) ([][]byte, error)
	// AuditHashes returns the stored hashes at the given stored-hash
	// indexes, or an error matching fs.ErrNotExist if any is missing
	// (store.ErrNotFound does).
	AuditHashes(ctx context.Context, indexes []int64) ([][32]byte, error)
	// LatestAuditCheckpoint returns an error matching fs.ErrNotExist when
	// there is none.
	LatestAuditCheckpoint(ctx context.Context) (size int64, note []byte, err error)
	AuditCheckpoint(ctx context.Context, size int64) ([]byte, error)
}

// isNotFound reports a Reader's "no such thing": the store's ErrNotFound
// matches fs.ErrNotExist, so that this package needs no store import.
func isNotFound(err error) bool { return errors.Is(err, fs.ErrNotExist) }
