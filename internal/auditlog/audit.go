// Package auditlog runs mayfly's audit log on a store: it takes entries,
// gives them their index, makes them as safe as promised, signs
// checkpoints, serves entries and proofs, and forwards entries to SIEM
// sinks (JSON-lines files, RFC 5424 syslog). The entry and checkpoint
// formats, the tree and verification are package audit's. It never drops
// an entry silently, and never writes a whole mayfly token into one
// (audit.EncodeEvent reduces them to their hint).
//
// # Durability: one contract
//
// Every entry has a Future, and Future.Wait is the one way to learn that
// it is safe: Wait returns the entry's index once the entry is as safe as
// the log promises for its type (and, where the log places it later, once
// it has its index), or an error. Entries come in two ways:
//
//   - An action that changes state (issuing, renewing and revoking tokens,
//     policy versions, secrets and the master key, admin tokens) writes its
//     entry in its own store transaction: Record makes the pending record,
//     the action's transaction writes it (store.Note), so that the action
//     and its entry commit together, durably, or not at all; Recorded turns
//     the pending ids that commit gave back into the entries' Futures,
//     which answer once the log has given the entries their indexes (in
//     shared mode at once: the sequencer gives them later). The
//     entry is durable before its Future exists: an error from Wait says
//     only that its index is not known yet.
//   - Every other entry (a refusal, a forwarded request, the server's own
//     events) goes in through Add (a forwarded request's decision through
//     Begin, its outcome through Finish), which returns a Future at once.
//     An error from Wait wraps failclosed.ErrUnavailable, and then the
//     caller must not perform what the entry records (fail closed).
//
// What "safe" means is the log's option, not the caller's choice:
//
//   - durable, the default for every type: on disk (the store's commit
//     fsynced) before Wait answers. An action's own entry always is.
//   - written, for the request types (Options.Requests; the gateway's by
//     default) unless Options.DurableRequests: Wait answers once a crash of
//     this process can no longer lose the entry (in the journal's mapping,
//     the store's WAL through the OS, or the PostgreSQL server); the disk
//     has it within 5 ms, so a power loss can lose that much. While the
//     log is unhealthy, requests are refused at once rather than tried.
//
// How the log keeps the promise depends on how it was opened, never on
// the caller: concurrent entries share one store transaction (group
// commit); with Options.Journal (embedded SQLite, Linux) written entries
// are copied into a memory-mapped write-ahead journal and folded into the
// store in bulk, and a forwarded request's decision and outcome become one
// entry; with Options.Shared (nodes on one PostgreSQL) entries are recorded
// pending, without a position, and one node at a time, the sequencer,
// gives them their indexes: Wait answers once the pending record is
// committed, with index -1, so that no node reads the log per request.
// Outcomes (Finish), records of what already happened, are not waited
// for: a failure marks the log unhealthy and counts in
// mayfly_audit_append_errors_total.
//
// The store implements the writes the modes need (AppendAudit and
// AddAuditPending, each told the commit mode, and AppendAuditFrom); only
// this package calls them.
package auditlog

import (
	"context"
	"errors"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// ErrClosed is what Future.Wait returns for an entry added after Close.
var ErrClosed = errors.New("audit log closed")

// Storage is what the Log needs from the store (*store.DB implements it).
type Storage interface {
	audit.Reader
	// AppendAudit stores entries at [start, start+len(entries)) and the
	// stored hashes at [firstHash, firstHash+len(hashes)) in one
	// transaction, committed as mode says (the log picks it from its
	// Options), or returns store.ErrConflict if the log's size is not
	// start. A mode the store does not know must be refused.
	AppendAudit(ctx context.Context, start int64, entries [][]byte, firstHash int64, hashes [][32]byte, mode store.AuditCommit) error
	// PutAuditCheckpoint is idempotent per size.
	PutAuditCheckpoint(ctx context.Context, size int64, note []byte) error
}

// CursorStorage is what a Forwarder needs: the entries and a cursor per
// sink name.
type CursorStorage interface {
	AuditEntries(ctx context.Context, start int64, limit int) ([][]byte, error)
	AuditCursor(ctx context.Context, name string) (int64, error)
	SetAuditCursor(ctx context.Context, name string, next int64) error
}
