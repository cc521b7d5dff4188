package console

import (
	"context"
	"fmt"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// Indexer is the audit sink that keeps the audit index (store.IndexAudit)
// the console's filtered listings read: run it under an
// auditlog.Forwarder, which follows the log from its stored cursor, so a
// restart resumes and a new index fills from the first entry.
type Indexer struct {
	Store interface {
		IndexAudit(ctx context.Context, rows []store.AuditIndexRow) error
	}
}

// IndexerName is the indexer's sink name (its cursor is "sink:console-index").
const IndexerName = "console-index"

// Name is IndexerName.
func (Indexer) Name() string { return IndexerName }

// Write indexes entries. An entry it cannot parse is indexed by its index
// alone (type "?"), so that the index never stops at it. Each value is
// kept cut as a filter is (cut): an entry may hold one of many KiB (the
// sub of any ID token a trusted issuer signs, recorded by a refused
// exchange; an admin's lease filter), which PostgreSQL refuses in a
// B-tree index, and a batch it refuses would be retried for ever.
func (x Indexer) Write(ctx context.Context, entries [][]byte, firstIndex int64) error {
	rows := make([]store.AuditIndexRow, 0, len(entries))
	for i, data := range entries {
		row := store.AuditIndexRow{Index: firstIndex + int64(i), Type: "?"}
		if e, err := audit.ParseEntry(data); err == nil {
			row.Type, row.Lease, row.Subject, row.Upstream, row.Status = cut(e.Type), cut(e.Lease), cut(e.Subject), cut(e.Upstream), e.Status
		}
		rows = append(rows, row)
	}
	if err := x.Store.IndexAudit(ctx, rows); err != nil {
		return fmt.Errorf("console: indexing audit entries from %d: %w", firstIndex, err)
	}
	return nil
}
