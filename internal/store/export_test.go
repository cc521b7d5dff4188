package store

import (
	"context"
	"database/sql"
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
