package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// CreateAtSchema makes the database cfg names with the schema steps up to
// version only, as a mayfly of that version left it.
func CreateAtSchema(ctx context.Context, cfg Config, version int) error {
	var db *DB
	var err error
	if cfg.PostgresDSN != "" {
		db, err = openPostgres(ctx, cfg.PostgresDSN, 0)
	} else {
		db, err = openSQLite(ctx, cfg)
	}
	if err != nil {
		return err
	}
	defer db.closeConns()
	return db.migrateTo(ctx, version)
}

// SQL is a read-only handle's pool (tests check that it refuses writes).
func (r *ReadOnly) SQL() *sql.DB { return r.db.read }

// PlanEndAdminSessions is the query plan of EndAdminSessionsNoted's
// statement for two roles, as the database would run it now (EXPLAIN
// QUERY PLAN on SQLite; EXPLAIN on PostgreSQL with sequential scans
// priced out, so that a usable index is taken however small the table).
// It changes nothing.
func (db *DB) PlanEndAdminSessions(ctx context.Context) (string, error) {
	q := `EXPLAIN QUERY PLAN ` + endSessionsSQL(2)
	if db.postgres {
		q = `EXPLAIN ` + endSessionsSQL(2)
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if db.postgres {
		if _, err := tx.ExecContext(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return "", err
		}
	}
	rows, err := tx.QueryContext(ctx, db.Rebind(q), int64(1), "sub", "admin", "operator", int64(1), int64(0), int64(0), int64(0))
	if err != nil {
		return "", err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var plan []string
	for rows.Next() {
		vals := make([]any, len(cols))
		for i := range vals {
			vals[i] = new(any)
		}
		if err := rows.Scan(vals...); err != nil {
			return "", err
		}
		// The plan's text is its last column on both backends.
		plan = append(plan, fmt.Sprint(*vals[len(vals)-1].(*any)))
	}
	return strings.Join(plan, "\n"), rows.Err()
}

// SessionSettings reads setting on each kind of session a node opens on
// PostgreSQL: the shared pool's, the audit sequencer's (taken for the
// call), the lease notifier's and the lease listener's.
func (db *DB) SessionSettings(ctx context.Context, setting string) (map[string]string, error) {
	out := map[string]string{}
	q := `SELECT current_setting($1)`
	var v string
	if err := db.read.QueryRowContext(ctx, q, setting).Scan(&v); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	out["pool"] = v
	seq, err := db.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		return nil, fmt.Errorf("sequencer: %v", err)
	}
	err = seq.conn.QueryRowContext(ctx, q, setting).Scan(&v)
	seq.Close()
	if err != nil {
		return nil, fmt.Errorf("sequencer: %w", err)
	}
	out["sequencer"] = v
	if err := db.NotifyLeases(ctx, "probe"); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	db.notifyMu.Lock()
	err = db.notifier.QueryRow(ctx, q, setting).Scan(&v)
	db.notifyMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	out["notifier"] = v
	return out, nil
}
