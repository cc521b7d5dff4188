package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
)

// minReadSchema is the oldest schema a read-only handle reads: the audit
// log's stored hashes are kept in runs (audit_hash_runs) since version 3.
const minReadSchema = 3

// ReadOnly is a store opened to be read and never written: offline audit
// verification, which must not change what it verifies, and a join's key
// checks, which must not change (migrate) a database its keys may not
// open. It has the DB's audit and key reads and nothing that writes, and
// its connections refuse writes themselves (see OpenReadOnly).
type ReadOnly struct {
	db     *DB
	schema int
}

// OpenReadOnly opens an existing store without changing it: SQLite's file
// read-only (mode=ro, query_only; a missing file is an error, never a new
// empty store), PostgreSQL in sessions whose transactions are read-only.
// No migration runs: a schema newer than this binary knows, or older than
// the oldest whose audit tables it reads, is refused. cfg.ReadMmap and
// cfg.BusyTimeout apply as for Open; the other settings concern writes.
func OpenReadOnly(ctx context.Context, cfg Config) (*ReadOnly, error) {
	var db *DB
	var err error
	if cfg.PostgresDSN != "" {
		db, err = openPostgresReadOnly(ctx, cfg.PostgresDSN)
	} else {
		db, err = openSQLiteReadOnly(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	v, err := schemaVersion(ctx, db.read, db.postgres)
	if err == nil {
		err = readableSchema(v)
	}
	if err != nil {
		db.closeConns()
		return nil, err
	}
	return &ReadOnly{db: db, schema: v}, nil
}

// ErrNoSchema is OpenReadOnly's answer for a database mayfly never
// initialised (no schema version).
var ErrNoSchema = errors.New("store: no mayfly schema in this database")

// readableSchema says why a read-only handle cannot read schema version v.
func readableSchema(v int) error {
	switch {
	case v == 0:
		return ErrNoSchema
	case v > SchemaVersion():
		return fmt.Errorf("store: database schema is version %d, newer than this mayfly knows (%d): read it with the mayfly that wrote it", v, SchemaVersion())
	case v < minReadSchema:
		return fmt.Errorf("store: database schema is version %d, older than this mayfly reads without migrating it (%d to %d): start this mayfly's server on it once, or read it with the mayfly that wrote it", v, minReadSchema, SchemaVersion())
	}
	return nil
}

func openSQLiteReadOnly(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Path == "" {
		return nil, errors.New("store: open sqlite: no path")
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	busy := cfg.BusyTimeout
	if busy == 0 {
		busy = 5 * time.Second
	}
	// mode=ro: SQLite opens the file read-only and never creates it;
	// query_only refuses writes on top. A running server's WAL is read as
	// any reader reads it (the -shm file coordinates them).
	q := url.Values{}
	q.Add("mode", "ro")
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "query_only(1)")
	if cfg.ReadMmap > 0 {
		q.Add("_pragma", "mmap_size("+strconv.FormatInt(cfg.ReadMmap, 10)+")")
	}
	r, err := sql.Open("sqlite", sqliteURI(abs)+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s read-only: %w", cfg.Path, err)
	}
	// As Open's readers: every connection kept, with its page cache.
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("store: open sqlite %s read-only: %w", cfg.Path, err)
	}
	return &DB{write: r, read: r}, nil
}

// sqliteURI is the file: URI of an absolute path, with the characters a
// URI gives a meaning to escaped (SQLite decodes %HH in the path).
func sqliteURI(abs string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs)
}

func openPostgresReadOnly(ctx context.Context, dsn string) (*DB, error) {
	pc, err := pgConfig(dsn)
	if err != nil {
		return nil, err
	}
	// Every transaction of these sessions is read-only unless it says
	// otherwise, and none of the reads does: the server refuses a write.
	pc.RuntimeParams["default_transaction_read_only"] = "on"
	p := stdlib.OpenDB(*pc)
	p.SetMaxOpenConns(4)
	p.SetMaxIdleConns(4)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.PingContext(pctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("store: connect postgres: %w", redactDSNErr(err, dsn))
	}
	return &DB{postgres: true, dsn: dsn, write: p, read: p}, nil
}

// SchemaVersion is the schema version of the database opened.
func (r *ReadOnly) SchemaVersion() int { return r.schema }

// Backend names the database: "sqlite" or "postgres".
func (r *ReadOnly) Backend() string { return r.db.Backend() }

// Close closes the connections.
func (r *ReadOnly) Close() error { return r.db.closeConns() }

// AuditSize is DB.AuditSize.
func (r *ReadOnly) AuditSize(ctx context.Context) (int64, error) { return r.db.AuditSize(ctx) }

// AuditEntries is DB.AuditEntries.
func (r *ReadOnly) AuditEntries(ctx context.Context, start int64, limit int) ([][]byte, error) {
	return r.db.AuditEntries(ctx, start, limit)
}

// ScanAuditEntries is DB.ScanAuditEntries.
func (r *ReadOnly) ScanAuditEntries(ctx context.Context, start int64, limit int, fn func(data []byte) error) error {
	return r.db.ScanAuditEntries(ctx, start, limit, fn)
}

// AuditHashes is DB.AuditHashes.
func (r *ReadOnly) AuditHashes(ctx context.Context, indexes []int64) ([][32]byte, error) {
	return r.db.AuditHashes(ctx, indexes)
}

// LatestAuditCheckpoint is DB.LatestAuditCheckpoint.
func (r *ReadOnly) LatestAuditCheckpoint(ctx context.Context) (int64, []byte, error) {
	return r.db.LatestAuditCheckpoint(ctx)
}

// KeyVersions is DB.KeyVersions.
func (r *ReadOnly) KeyVersions(ctx context.Context) ([]KeyVersion, error) {
	return r.db.KeyVersions(ctx)
}

// GetMeta is DB.GetMeta.
func (r *ReadOnly) GetMeta(ctx context.Context, key string) ([]byte, error) {
	return r.db.GetMeta(ctx, key)
}

// AuditCheckpoint is DB.AuditCheckpoint.
func (r *ReadOnly) AuditCheckpoint(ctx context.Context, size int64) ([]byte, error) {
	return r.db.AuditCheckpoint(ctx, size)
}
