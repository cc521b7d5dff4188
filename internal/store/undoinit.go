package store

import (
	"context"
	"database/sql"
	"fmt"
)

// initTables are the tables an init writes (besides meta): its keyring,
// its system secrets, its first admin token and the audit log recording it.
var initTables = []string{"secrets", "admin_tokens", "audit_pending", "audit_entries", "audit_hashes",
	"audit_hash_runs", "audit_checkpoints", "audit_cursors", "audit_index", "keyring"}

// UndoInit erases what a failed init wrote to a database it found
// without a keyring (mayfly init --postgres, interrupted), so that init
// can be run again: the rows of initTables and every meta row but the
// schema version, in one transaction. It erases only when the database has
// a keyring and ours reports it is the caller's (sealed by the master key
// that init made): a database another init won, or one already in use, is
// left alone. It reports whether it erased.
func (db *DB) UndoInit(ctx context.Context, ours func([]KeyVersion) bool) (bool, error) {
	erased := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		erased = false
		lock := ""
		if db.postgres {
			// Held until the erase commits: no node adds or uses a
			// keyring version meanwhile.
			lock = " FOR UPDATE"
		}
		rows, err := tx.QueryContext(ctx, db.Rebind(`SELECT `+keyringCols+` FROM keyring ORDER BY version`+lock))
		if err != nil {
			return err
		}
		var kvs []KeyVersion
		for rows.Next() {
			k, err := scanKeyVersion(rows)
			if err != nil {
				rows.Close()
				return err
			}
			kvs = append(kvs, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(kvs) == 0 || !ours(kvs) {
			return nil
		}
		for _, t := range initTables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t); err != nil {
				return fmt.Errorf("%s: %w", t, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key <> 'schema_version'`); err != nil {
			return fmt.Errorf("meta: %w", err)
		}
		erased = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: undo init: %w", err)
	}
	return erased, nil
}
