package server

import (
	"context"
	"fmt"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// VerifyAudit recomputes the audit log of a data dir's store (its SQLite
// file, or PostgreSQL when postgresDSN is set) against the verifier key,
// without a running server: `mayfly audit verify --data-dir`. The store is
// wiring, so the CLI asks here rather than opening it itself. The store is
// opened read-only and never migrated: a verifier does not change what it
// verifies, and refuses a schema it cannot read as it is.
func VerifyAudit(ctx context.Context, dataDir, postgresDSN, key string, opts audit.VerifyOptions) (*audit.VerifyResult, error) {
	d := datadir.Dir(dataDir)
	db, err := store.OpenReadOnly(ctx, store.Config{Path: d.Database(), PostgresDSN: postgresDSN, BusyTimeout: 10 * time.Second,
		// Verification reads the whole file once: mapping it spares a
		// pread per 4 KiB page.
		ReadMmap: 1 << 40})
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	defer db.Close()
	return audit.Verify(ctx, db, key, opts)
}
