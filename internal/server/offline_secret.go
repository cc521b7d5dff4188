package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// ErrServerRunning is returned by offline commands on a data dir a running
// server holds: they must go through its API instead.
var ErrServerRunning = errors.New("a server is running on this data dir")

// OfflineOptions name the storage an offline command opens: the data dir
// (its keys) and, when the cluster keeps its state there, PostgreSQL.
type OfflineOptions struct {
	DataDir  string
	Postgres string // or MAYFLY_POSTGRES
}

// PutSecretOffline stores a new version of a secret straight into the data
// dir's storage, with the same audit entry as PUT /v1/secrets/{name} (admin
// "local", because whoever can read the data dir holds the master key
// anyway). It is how the first secrets get in before the first start, so
// that a policy naming them can be loaded at start. On embedded SQLite it
// refuses while a server runs (the audit journal's lock says so): the
// server is then the only writer, and the API is the way in.
func PutSecretOffline(ctx context.Context, o OfflineOptions, name string, value []byte) (version int, err error) {
	d := datadir.Dir(o.DataDir)
	if err := d.Require(); err != nil {
		return 0, err
	}
	if authority.CredentialShaped(name) {
		// Kept in the row and the audit entry otherwise; not quoted here.
		return 0, errors.New("the secret name must not be a token, password or session value (pass the name, and the value with --value-file)")
	}
	if err := secret.ValidateName(name); err != nil {
		return 0, fmt.Errorf("secret name %q: must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit)", name)
	}
	if len(value) == 0 || len(value) > secret.MaxValueSize {
		return 0, fmt.Errorf("secret value must be 1 byte to %d KiB", secret.MaxValueSize>>10)
	}
	off, err := openOffline(ctx, d, o, 0, "store the secret through it (mayfly secret put NAME with MAYFLY_ADDR, MAYFLY_CACERT and MAYFLY_TOKEN set)")
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, off.close(ctx)) }()
	log, vault := off.log, off.vault
	// The write and its entry commit together, as through the API: a write
	// that cannot be recorded does not happen, and a failed write leaves no
	// entry. The entry names the secret, never its value.
	ev := audit.Event{Type: audit.TypeSecretWrite, Admin: "local", Secret: name, Status: 200, Detail: map[string]any{"via": "data dir"}}
	since := log.Size()
	note := &store.Note{Make: func(store.Changes) ([][]byte, error) {
		rec, err := log.Record(ev)
		if err != nil {
			return nil, err
		}
		return [][]byte{rec}, nil
	}}
	if version, err = vault.PutNoted(ctx, name, value, note); err != nil {
		if errors.Is(err, store.ErrNoteFailed) {
			return 0, fmt.Errorf("audit: %w", err)
		}
		return 0, err
	}
	// Wait for its index, so that the log holds it when this returns. It is
	// durable already: should the wait end first, the next start places it.
	_ = log.Settle(ctx, since, note)
	return version, nil
}

// offlineStorage is what an offline command writes through: the data
// dir's store, its audit log and its vault.
type offlineStorage struct {
	st    *store.DB
	log   *auditlog.Log
	vault *secret.Vault
}

// openOffline opens the storage of the data dir d for an offline command;
// busy is how long the store waits for a lock (0: its default). It
// refuses an audit key the database was not initialised with, as a
// server start does: before the log's first checkpoint nothing else would
// notice entries signed by another key. Nodes
// sharing PostgreSQL append through the shared sequencer: a direct append
// would race a running cluster for the next index. On embedded SQLite the
// log takes the audit journal, whose lock is also how a running server is
// noticed: ErrServerRunning, through saying how to do the same through it.
// Where there is no journal, a server's concurrent append would collide on
// the log's index in the store and fail closed.
func openOffline(ctx context.Context, d datadir.Dir, o OfflineOptions, busy time.Duration, through string) (_ *offlineStorage, err error) {
	if err := d.RequireOwner(); err != nil {
		return nil, err
	}
	dsn := o.Postgres
	if dsn == "" {
		dsn = os.Getenv("MAYFLY_POSTGRES")
	}
	if err := requireStore(ctx, d, dsn); err != nil {
		return nil, err
	}
	master, err := loadMasterKey(ctx, d, dsn)
	if err != nil {
		return nil, err
	}
	defer clear(master)
	st, err := store.Open(ctx, store.Config{Path: d.Database(), PostgresDSN: dsn, BusyTimeout: busy})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	signer, err := readKeyFile(d.AuditKey(), "audit key")
	if err != nil {
		return nil, err
	}
	if err := checkAuditKey(ctx, st, strings.TrimSpace(string(signer))); err != nil {
		clear(signer)
		return nil, err
	}
	aopts := auditlog.Options{Shared: dsn != ""}
	if dsn == "" && auditlog.JournalSupported() {
		aopts.Journal = d.AuditJournal()
	}
	log, err := auditlog.Open(ctx, st, strings.TrimSpace(string(signer)), aopts)
	clear(signer)
	if err != nil {
		if strings.Contains(err.Error(), "in use by another process") {
			return nil, fmt.Errorf("%w: %s", ErrServerRunning, through)
		}
		return nil, err
	}
	vault, err := secret.Open(ctx, st, master, secret.Options{})
	clear(master)
	if err != nil {
		return nil, errors.Join(err, log.Close(context.WithoutCancel(ctx)))
	}
	return &offlineStorage{st: st, log: log, vault: vault}, nil
}

// close closes the vault, the audit log (whose error it returns) and the
// store, in that order.
func (o *offlineStorage) close(ctx context.Context) error {
	o.vault.Close()
	err := o.log.Close(context.WithoutCancel(ctx))
	o.st.Close()
	return err
}
