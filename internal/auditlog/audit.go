// Package auditlog runs mayfly's audit log (the formats, proofs and
// verification are package audit's): group commit of concurrent appends into one
// durable storage transaction, signed C2SP tlog-checkpoints, inclusion and
// consistency proofs, offline and remote verification, forwarding of
// entries to SIEM sinks (JSON-lines files, RFC 5424 syslog), and, for a
// store with one writer, a write-ahead journal that takes the gateway's
// entries in one write each and folds them into the store in bulk.
//
// It never drops an entry silently: Append returns only once the entry is
// durable (AppendWritten, for the gateway, once a crash of the process can
// no longer lose it), and otherwise returns an error wrapping
// ErrUnavailable so that the action it records does not happen. It never writes a whole mayfly
// token into an entry (checksum-valid tokens are reduced to their hint).
package auditlog

import (
	"context"
	"errors"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// ErrUnavailable is wrapped by every error Append returns because the log
// could not make an entry durable (the store failed). Callers answer 503.
var ErrUnavailable = errors.New("audit log unavailable")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit log closed")

// Storage is what the Log needs from the store (*store.DB implements it).
type Storage interface {
	audit.Reader
	// AppendAudit stores entries at [start, start+len(entries)) and the
	// stored hashes at [firstHash, firstHash+len(hashes)) in one durable
	// transaction, or returns store.ErrConflict if the log's size is not
	// start.
	AppendAudit(ctx context.Context, start int64, entries [][]byte, firstHash int64, hashes [][32]byte) error
	// PutAuditCheckpoint is idempotent per size.
	PutAuditCheckpoint(ctx context.Context, size int64, note []byte) error
}

// writtenStorage is implemented by a Storage that can commit without
// waiting for the disk (*store.DB): AppendAuditWritten returns once a crash
// of this process can no longer lose the entries, and the storage makes
// them durable shortly after. AppendWritten uses it.
type writtenStorage interface {
	AppendAuditWritten(ctx context.Context, start int64, entries [][]byte, firstHash int64, hashes [][32]byte) error
}

// keptStorage is implemented by a Storage that can commit entries a
// journal keeps without a deadline to make them durable (*store.DB).
type keptStorage interface {
	AppendAuditKept(ctx context.Context, start int64, entries [][]byte, firstHash int64, hashes [][32]byte) error
}

// CursorStorage is what a Forwarder needs: the entries and a cursor per
// sink name.
type CursorStorage interface {
	AuditEntries(ctx context.Context, start int64, limit int) ([][]byte, error)
	AuditCursor(ctx context.Context, name string) (int64, error)
	SetAuditCursor(ctx context.Context, name string, next int64) error
}
