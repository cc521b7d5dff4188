package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// An action (issuing, renewing or revoking a token, applying a policy
// version, writing or deleting a secret, rotating the master key, creating
// or revoking an admin token) and the audit entry that records it commit together: the
// action's own transaction writes the entry as a pending audit record
// (audit_pending), and the audit log later gives it its tree position as it
// does every pending record. A failure of either half rolls back both, so a
// caller is never told "nothing was done" about an action that was, and no
// action stands without its entry.

// Note is the audit record of one action, written in the action's own
// transaction. The store fills Changes and calls Make inside that
// transaction, after the action's statements (it may do so more than once:
// a group commit can run a write twice); after the commit, PIDs are the
// pending ids of the records Make returned, in order, and Records those
// records.
type Note struct {
	// Make returns the records to write, one per audit entry (opaque to the
	// store), from what the action changed; none: the action is not
	// recorded. An error undoes the action.
	Make func(c Changes) ([][]byte, error)
	// PIDs and Records are set once the action committed: Records[i] was
	// written as the pending record PIDs[i]. Handing the records to the
	// audit log spares it reading back what this process just wrote.
	PIDs    []int64
	Records [][]byte
}

// Changes is what an action changed, for its Note.
type Changes struct {
	// Leases are the leases inserted, renewed or revoked.
	Leases []string
	// ByGrant are the leases a policy apply revoked, by removed grant.
	ByGrant map[string][]string
	// Admins are the admin tokens revoked, by name.
	Admins []string
	// Minted are the minted credentials marked for revocation, by record
	// id (a leak report's shared ones).
	Minted []string
	// Sessions are the admin sessions a leak report revoked, by id.
	Sessions []string
	// EndedSessions are the admin sessions ended by subject and role (a
	// sign-in that maps its user to a weaker role), as they were.
	EndedSessions []AdminSession
	// EndedAdmins are the admin tokens ended with them: those the
	// subject made, of a role they no longer have, as they were.
	EndedAdmins []AdminToken
	// Version is the policy version a policy apply stored.
	Version int64
	// SecretVersion is the version a secret write stored (a rotation's
	// entry names it).
	SecretVersion int
	// Hint is an issued token's hint (never the token), for its entry.
	Hint string
	// Sealed are the policy versions an upgrade sealed (their MAC set).
	Sealed []int64
	// SealedRotations are the secrets whose rotation settings an upgrade
	// sealed (their MAC set).
	SealedRotations []string
}

// ErrNoteFailed wraps a failure to make a Note's records (an error of
// Note.Make) or to write them: the action was undone.
var ErrNoteFailed = errors.New("store: the audit record could not be made")

// note writes n's records for c inside tx; n may be nil (no record).
func (db *DB) note(ctx context.Context, tx *sql.Tx, n *Note, c Changes) error {
	if n == nil {
		return nil
	}
	n.PIDs, n.Records = n.PIDs[:0], nil
	if n.Make == nil {
		return nil
	}
	recs, err := n.Make(c)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoteFailed, err)
	}
	for _, r := range recs {
		// One row each: an action has one entry, or one per removed grant.
		id, err := db.insertPendingOne(ctx, tx, r)
		if err != nil {
			return fmt.Errorf("%w: recording the audit entry: %w", ErrNoteFailed, err)
		}
		n.PIDs = append(n.PIDs, id)
	}
	n.Records = recs
	return nil
}

// insertPendingOne inserts one pending record in tx and returns its id. On
// SQLite the id is the row id the insert reports: a plain statement costs
// the exchange's commit less than a RETURNING query's rows (the row id is
// the connection's, and this transaction holds the only write connection).
func (db *DB) insertPendingOne(ctx context.Context, tx *sql.Tx, rec []byte) (int64, error) {
	if db.postgres {
		var id int64
		err := db.txQueryRow(ctx, tx, `INSERT INTO audit_pending (data) VALUES (?) RETURNING id`, rec).Scan(&id)
		return id, err
	}
	res, err := db.exec(ctx, tx, `INSERT INTO audit_pending (data) VALUES (?)`, rec)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}
