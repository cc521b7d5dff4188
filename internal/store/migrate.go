package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
)

// migration is one schema step, per backend: {{blob}} and {{serial}} are
// filled per backend; an empty text only records the version.
type migration struct{ sqlite, postgres string }

func both(s string) migration { return migration{sqlite: s, postgres: s} }

// migrations returns the schema steps in order; step i brings the schema to
// version i+1. Steps are only ever appended.
func migrations() []migration {
	return []migration{
		// 1: the whole first schema.
		both(`
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value {{blob}} NOT NULL
);
CREATE TABLE keyring (
	version    INTEGER PRIMARY KEY,
	sealed     {{blob}} NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE TABLE secrets (
	name        TEXT NOT NULL,
	version     INTEGER NOT NULL,
	kek_version INTEGER NOT NULL,
	wrapped_dek {{blob}} NOT NULL,
	ciphertext  {{blob}} NOT NULL,
	created_at  BIGINT NOT NULL,
	deleted_at  BIGINT,
	PRIMARY KEY (name, version)
);
CREATE INDEX secrets_kek ON secrets (kek_version);
CREATE TABLE admin_tokens (
	name       TEXT PRIMARY KEY,
	role       TEXT NOT NULL,
	token_hash {{blob}} NOT NULL UNIQUE,
	created_at BIGINT NOT NULL,
	revoked_at BIGINT
);
CREATE TABLE leases (
	id             TEXT PRIMARY KEY,
	token_hash     {{blob}} NOT NULL UNIQUE,
	issuer         TEXT NOT NULL,
	subject        TEXT NOT NULL,
	job            TEXT NOT NULL,
	claims         TEXT NOT NULL,
	grants         TEXT NOT NULL,
	issued_at      BIGINT NOT NULL,
	expires_at     BIGINT NOT NULL,
	max_expires_at BIGINT NOT NULL,
	source         TEXT NOT NULL,
	bind_source    INTEGER NOT NULL,
	jkt            TEXT NOT NULL,
	uses           BIGINT NOT NULL,
	max_uses       BIGINT NOT NULL,
	revoked_at     BIGINT,
	revoke_reason  TEXT NOT NULL
);
CREATE INDEX leases_expires ON leases (expires_at);
CREATE INDEX leases_subject ON leases (subject);
CREATE INDEX leases_job ON leases (job);
CREATE TABLE lease_events (
	seq      {{serial}},
	lease_id TEXT NOT NULL,
	kind     TEXT NOT NULL
);
CREATE TABLE jtis (
	issuer     TEXT NOT NULL,
	jti        TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (issuer, jti)
);
CREATE INDEX jtis_expires ON jtis (expires_at);
CREATE TABLE policy_versions (
	version    BIGINT PRIMARY KEY,
	hash       TEXT NOT NULL,
	source     {{blob}} NOT NULL,
	applied_at BIGINT NOT NULL,
	applied_by TEXT NOT NULL
);
CREATE TABLE audit_entries (
	idx  BIGINT PRIMARY KEY,
	data {{blob}} NOT NULL
);
CREATE TABLE audit_hashes (
	id   BIGINT PRIMARY KEY,
	hash {{blob}} NOT NULL
);
CREATE TABLE audit_checkpoints (
	size BIGINT PRIMARY KEY,
	note {{blob}} NOT NULL
);
CREATE TABLE audit_cursors (
	name TEXT PRIMARY KEY,
	next BIGINT NOT NULL
);
`),
		// 2: on SQLite, only INTEGER PRIMARY KEY is the row id; BIGINT
		// PRIMARY KEY made every audit append write a table and a separate
		// index. Rebuild the audit tables keyed by the row id.
		{sqlite: rekey("audit_entries", "idx", "data") + rekey("audit_hashes", "id", "hash") + rekey("audit_checkpoints", "size", "note")},
		// 3: the stored hashes of one append in one row (first_id, then
		// 32 bytes per hash), not a row per hash: two of every three rows
		// an audit append wrote. audit_hashes keeps what earlier versions
		// wrote and is still read.
		{
			sqlite:   `CREATE TABLE audit_hash_runs (first_id INTEGER PRIMARY KEY, hashes BLOB NOT NULL);`,
			postgres: `CREATE TABLE audit_hash_runs (first_id BIGINT PRIMARY KEY, hashes BYTEA NOT NULL);`,
		},
		// 4: nodes that share a database follow each other's lease events
		// without ever skipping one and without reading back their own:
		// each event names the store handle (node) that wrote it, and on
		// PostgreSQL the transaction that wrote it, so a poller can re-read
		// the events of a transaction that was still running when it read
		// past their sequence numbers. policy_head is the policy version in
		// force: a lease insert checks it in its own transaction.
		{
			sqlite: `
ALTER TABLE lease_events ADD COLUMN origin TEXT NOT NULL DEFAULT '';
CREATE TABLE policy_head (id INTEGER PRIMARY KEY, version BIGINT NOT NULL);
INSERT INTO policy_head (id, version) SELECT 1, COALESCE(MAX(version), 0) FROM policy_versions;
`,
			postgres: `
ALTER TABLE lease_events ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE lease_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX lease_events_xid ON lease_events (xid, seq);
CREATE TABLE policy_head (id INTEGER PRIMARY KEY, version BIGINT NOT NULL);
INSERT INTO policy_head (id, version) SELECT 1, COALESCE(MAX(version), 0) FROM policy_versions;
`,
		},
		// 5: nodes that share PostgreSQL record audit entries without a
		// tree position (audit_pending) and one sequencer at a time moves
		// them into audit_entries, noting each entry's pending id (pid) so
		// that its node learns the index it got.
		{
			sqlite: `CREATE TABLE audit_pending (id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);
ALTER TABLE audit_entries ADD COLUMN pid INTEGER;`,
			postgres: `CREATE TABLE audit_pending (id BIGSERIAL PRIMARY KEY, data BYTEA NOT NULL);
ALTER TABLE audit_entries ADD COLUMN pid BIGINT;`,
		},
		// 6: rotation as code. A rotated secret's replaced version keeps its
		// sealed bytes until retire_at (its grace period) rather than losing
		// them at once; secret_rotations holds each rotated secret's
		// settings, schedule, outcome and which node is rotating it now.
		both(`
ALTER TABLE secrets ADD COLUMN retire_at BIGINT;
CREATE TABLE secret_rotations (
	name          TEXT PRIMARY KEY,
	spec          TEXT NOT NULL,
	next_at       BIGINT NOT NULL,
	last_at       BIGINT NOT NULL DEFAULT 0,
	last_version  INTEGER NOT NULL DEFAULT 0,
	failures      INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT NOT NULL DEFAULT '',
	last_error_at BIGINT NOT NULL DEFAULT 0,
	claimed_by    TEXT NOT NULL DEFAULT '',
	claimed_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX secret_rotations_next ON secret_rotations (next_at);
`),
		// 7: credentials mayfly mints (SPEC section 9): one row per
		// credential, written before the credential is created (state
		// pending) so that nothing is ever made upstream that no row names.
		// value_hash is the keyed hash of its secret value (never the
		// value); sealed is what revoking it needs that is secret (e.g. a
		// GitHub installation token), sealed under a server key.
		both(`
CREATE TABLE minted (
	id              TEXT PRIMARY KEY,
	lease_id        TEXT NOT NULL,
	upstream        TEXT NOT NULL,
	grant_name      TEXT NOT NULL,
	kind            TEXT NOT NULL,
	external_name   TEXT NOT NULL,
	value_hash      {{blob}} UNIQUE,
	params          {{blob}} NOT NULL,
	sealed          {{blob}},
	state           TEXT NOT NULL,
	created_at      BIGINT NOT NULL,
	expires_at      BIGINT NOT NULL,
	revoke_reason   TEXT NOT NULL,
	revoke_attempts BIGINT NOT NULL,
	next_attempt_at BIGINT NOT NULL,
	last_error      TEXT NOT NULL,
	revoked_at      BIGINT
);
CREATE INDEX minted_lease ON minted (lease_id);
CREATE INDEX minted_due ON minted (state, next_attempt_at);
`),
		// 8: admin tokens expire and say when they were last used. Tokens
		// made before have no expiry (NULL) and keep working.
		both(`
ALTER TABLE admin_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE admin_tokens ADD COLUMN last_used_at BIGINT;
`),
		// 9: humans signed in through the company's identity provider
		// (admin_oidc). A session row keeps the keyed hash of its value,
		// never the value; admin_logins holds a sign-in under way (its
		// state, or the one-time code a CLI trades for a session), by keyed
		// hash too, taken once.
		both(`
CREATE TABLE admin_sessions (
	id           TEXT PRIMARY KEY,
	token_hash   {{blob}} NOT NULL UNIQUE,
	name         TEXT NOT NULL,
	subject      TEXT NOT NULL,
	role         TEXT NOT NULL,
	via          TEXT NOT NULL,
	source       TEXT NOT NULL,
	created_at   BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL,
	revoked_at   BIGINT,
	last_used_at BIGINT
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);
CREATE TABLE admin_logins (
	key_hash   {{blob}} PRIMARY KEY,
	kind       TEXT NOT NULL,
	data       {{blob}} NOT NULL,
	expires_at BIGINT NOT NULL
);
`),
		// 10: the web console. audit_index holds the fields an audit entry
		// is filtered by, one row per entry (written by the console's
		// indexer, which follows the log as a sink), each with an index
		// ending in idx so that a filtered page is a keyset range scan,
		// newest first. leases_issued serves the lease listing's order.
		// nodes is each server's heartbeat, for the health page.
		{
			sqlite: `
CREATE TABLE audit_index (
	idx      INTEGER PRIMARY KEY,
	type     TEXT NOT NULL,
	lease    TEXT NOT NULL,
	subject  TEXT NOT NULL,
	upstream TEXT NOT NULL,
	status   INTEGER NOT NULL
);
` + auditIndexIndexes + `
CREATE INDEX leases_issued ON leases (issued_at, id);
CREATE TABLE nodes (id TEXT PRIMARY KEY, started_at BIGINT NOT NULL, seen_at BIGINT NOT NULL, version TEXT NOT NULL);
`,
			postgres: `
CREATE TABLE audit_index (
	idx      BIGINT PRIMARY KEY,
	type     TEXT NOT NULL,
	lease    TEXT NOT NULL,
	subject  TEXT NOT NULL,
	upstream TEXT NOT NULL,
	status   INTEGER NOT NULL
);
` + auditIndexIndexes + `
CREATE INDEX leases_issued ON leases (issued_at, id);
CREATE TABLE nodes (id TEXT PRIMARY KEY, started_at BIGINT NOT NULL, seen_at BIGINT NOT NULL, version TEXT NOT NULL);
`,
		},
		// 11: the console's lease listing filtered by repository: an index
		// on the claim itself (GitHub's repository, GitLab's project_path),
		// so a repository with no live lease does not scan them all.
		{
			sqlite: `
CREATE INDEX leases_repository ON leases (` + repoExpr(false, "repository") + `);
CREATE INDEX leases_project_path ON leases (` + repoExpr(false, "project_path") + `);
`,
			postgres: `
CREATE INDEX leases_repository ON leases ((` + repoExpr(true, "repository") + `));
CREATE INDEX leases_project_path ON leases ((` + repoExpr(true, "project_path") + `));
`,
		},
		// 12: a secret version can be pending: stored but not in use (a
		// postgres_password rotation's new value, written before its
		// ALTER ROLE commits and made live after; Secret.Pending).
		both(`ALTER TABLE secrets ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;`),
		// 13: every policy version carries a MAC under a key of the vault
		// (authority.PolicyMAC), so that a database writer without the
		// node's keys cannot plant or edit the policy the gateway enforces.
		// Rows from before have none (NULL): a node holding the keys seals
		// them once, at its first start on this schema.
		both(`ALTER TABLE policy_versions ADD COLUMN mac {{blob}};`),
		// 14: lowering an admin's role ends that subject's stronger
		// sessions (EndAdminSessionsNoted) by subject: an index on it, so
		// that statement reads the subject's sessions, not every live one.
		both(`CREATE INDEX admin_sessions_subject ON admin_sessions (subject);`),
		// 15: an admin token made by a signed-in human, or with a token
		// one made, keeps that human's subject (AdminToken.CreatorSubject),
		// so that lowering their role ends the stronger tokens they made
		// as it ends their sessions (EndAdminSessionsNoted). NULL: made by
		// init, offline, or before. Admin tokens are few: no index.
		both(`ALTER TABLE admin_tokens ADD COLUMN creator_subject TEXT;`),
		// 16: every rotation's settings carry a MAC under a key of the
		// vault (rotate.SpecMAC), so that a database writer without the
		// node's keys cannot make the server ALTER ROLE with a stored
		// admin DSN or feed a secret to a rotator of its choosing. Rows
		// from before have none (NULL): sealed once, as policy versions.
		both(`ALTER TABLE secret_rotations ADD COLUMN mac {{blob}};`),
		// 17: the rotations' head (RotationHead): which MAC each rotated
		// secret's settings carry now, authenticated as a whole with a
		// generation that only grows, so that a database writer cannot
		// put back older settings a node once wrote (their own MAC is
		// genuine). Unsealed (NULL) until a node seals it.
		both(`CREATE TABLE rotation_head (id INTEGER PRIMARY KEY, gen BIGINT NOT NULL, manifest TEXT NOT NULL, mac {{blob}});
INSERT INTO rotation_head (id, gen, manifest, mac) VALUES (1, 0, '', NULL);`),
	}
}

// repoExpr is a lease's claim as SQL reads it from the claims JSON, in
// the very form its index was built on (migration 11).
func repoExpr(postgres bool, claim string) string {
	if postgres {
		return `claims::jsonb ->> '` + claim + `'`
	}
	return `json_extract(claims, '$.` + claim + `')`
}

// rekey rebuilds SQLite table t(key, val) with key as the row id.
func rekey(t, key, val string) string {
	return `
CREATE TABLE ` + t + `_new (` + key + ` INTEGER PRIMARY KEY, ` + val + ` BLOB NOT NULL);
INSERT INTO ` + t + `_new (` + key + `, ` + val + `) SELECT ` + key + `, ` + val + ` FROM ` + t + ` ORDER BY ` + key + `;
DROP TABLE ` + t + `;
ALTER TABLE ` + t + `_new RENAME TO ` + t + `;
`
}

// SchemaVersion is the schema version this binary writes.
func SchemaVersion() int { return len(migrations()) }

// errSchemaNewer refuses to run this binary on a database a newer mayfly
// migrated to version v: at start (Open), and on a running node from the
// moment it learns of it (SchemaNewer).
func errSchemaNewer(v int) error {
	return fmt.Errorf("store %w: the database schema is version %d, newer than this mayfly knows (%d): upgrade this binary", failclosed.ErrUnavailable, v, SchemaVersion())
}

// noteSchema takes in the schema version (as meta stores it) that a read
// made anyway found, so that a node learns of a newer mayfly's migration
// without a statement of its own for it.
func (db *DB) noteSchema(v []byte) {
	n, err := strconv.Atoi(string(v))
	if err != nil || n <= SchemaVersion() {
		return
	}
	db.newer.Store(int64(n))
}

// SchemaNewer is nil until this handle has seen that a newer mayfly
// migrated its database; from then on it is why the handle refuses every
// write (wrapping failclosed.ErrUnavailable: answered 503), its readiness
// ping fails and the rights it holds are given up. Rows in this binary's
// format under a schema that expects others could be lost or misread by
// the newer nodes (an older sequencer refuses their pending records as not
// sealed its way, and deletes them). There is no way back: a schema is
// never migrated down.
func (db *DB) SchemaNewer() error {
	if v := db.newer.Load(); v != 0 {
		return errSchemaNewer(int(v))
	}
	return nil
}

func (db *DB) dialect(s string) string {
	if db.postgres {
		s = strings.ReplaceAll(s, "{{blob}}", "BYTEA")
		s = strings.ReplaceAll(s, "{{serial}}", "BIGSERIAL PRIMARY KEY")
	} else {
		s = strings.ReplaceAll(s, "{{blob}}", "BLOB")
		s = strings.ReplaceAll(s, "{{serial}}", "INTEGER PRIMARY KEY AUTOINCREMENT")
	}
	return s
}

// migrate applies pending migrations, each in its own transaction, under a
// lock so that several nodes starting at once apply each step once.
func (db *DB) migrate(ctx context.Context) error {
	return db.migrateTo(ctx, len(migrations()))
}

// migrateTo is migrate up to schema version target (tests make the
// schema an older mayfly left with it).
func (db *DB) migrateTo(ctx context.Context, target int) error {
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	defer conn.Close()
	if db.postgres {
		// A session-level advisory lock serialises migrating nodes.
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7303885)`); err != nil {
			return fmt.Errorf("store: migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(7303885)`)
	}
	current, err := schemaVersion(ctx, conn, db.postgres)
	if err != nil {
		return err
	}
	steps := migrations()
	if current > len(steps) {
		return errSchemaNewer(current)
	}
	for i := current; i < min(target, len(steps)); i++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("store: migrate to %d: %w", i+1, err)
		}
		text := steps[i].sqlite
		if db.postgres {
			text = steps[i].postgres
		}
		for _, stmt := range strings.Split(db.dialect(text), ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				return fmt.Errorf("store: migrate to %d: %w", i+1, err)
			}
		}
		v := []byte(strconv.Itoa(i + 1))
		q := `INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`
		if _, err := tx.ExecContext(ctx, db.Rebind(q), v); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migrate to %d: record version: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("store: migrate to %d: commit: %w", i+1, err)
		}
	}
	return nil
}

// rowQuerier is what schemaVersion reads through: a connection (migrate,
// under its lock) or a pool (a read-only handle).
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion reads the schema version the database records; 0 when it
// has no schema yet.
func schemaVersion(ctx context.Context, conn rowQuerier, postgres bool) (int, error) {
	var exists bool
	var q string
	if postgres {
		q = `SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'meta')`
	} else {
		q = `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')`
	}
	if err := conn.QueryRowContext(ctx, q).Scan(&exists); err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v []byte
	err := conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", err)
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return 0, fmt.Errorf("store: schema version %q is not a number", v)
	}
	return n, nil
}
