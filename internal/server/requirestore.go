package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// requireStore refuses to go on unless the store d is started on (its
// SQLite file, or the PostgreSQL database dsn names) is one init made:
// opening a store creates what is missing, so a forgotten --postgres, a
// mistyped DSN or a deleted mayfly.db would otherwise give a new, empty
// mayfly, signing a second log with the data dir's audit key. It only
// reads; a store it cannot judge (unreachable, an older schema to
// migrate) is left for the open that follows to report or migrate.
func requireStore(ctx context.Context, d datadir.Dir, dsn string) error {
	if dsn == "" {
		if _, err := os.Stat(d.Database()); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s is missing: if this data dir keeps its store in PostgreSQL, pass --postgres DSN (or set MAYFLY_POSTGRES); else restore it from a backup", d.Database())
		}
		return nil
	}
	ro, err := store.OpenReadOnly(ctx, store.Config{PostgresDSN: dsn})
	if errors.Is(err, store.ErrNoSchema) {
		return errors.New("the PostgreSQL database holds no mayfly store: check --postgres (or MAYFLY_POSTGRES), it must name the database this data dir was initialised with (mayfly init --postgres)")
	}
	if err != nil {
		return nil
	}
	defer ro.Close()
	if ks, err := ro.KeyVersions(ctx); err == nil && len(ks) == 0 {
		return errors.New("the PostgreSQL database holds no mayfly store (no keyring): check --postgres (or MAYFLY_POSTGRES), it must name the database this data dir was initialised with (mayfly init --postgres)")
	}
	return nil
}

// loadMasterKey returns d's master key (MAYFLY_MASTER_KEY first, else
// the key file) once it opens the keyring of the store d is started on,
// read through a handle that cannot write: opening the store migrates its
// schema, which a start refused for its key must not have done (the
// release an operator rolls back to would refuse the store as newer than
// it knows). A store it cannot judge is left, as requireStore leaves it,
// to the vault, which checks the key again once the store is open; so is
// a keyring some of whose versions the key opens (a row changed in the
// store, not the operator's key: the vault names the version).
func loadMasterKey(ctx context.Context, d datadir.Dir, dsn string) ([]byte, error) {
	env := os.Getenv(secret.MasterKeyEnv)
	master, err := secret.LoadMasterKey(d.MasterKey(), env)
	if err != nil {
		return nil, err
	}
	ro, err := store.OpenReadOnly(ctx, store.Config{Path: d.Database(), PostgresDSN: dsn})
	if err != nil {
		return master, nil
	}
	defer ro.Close()
	ks, err := ro.KeyVersions(ctx)
	if err != nil || len(ks) == 0 {
		return master, nil
	}
	for i := range ks {
		if secret.SealedBy(master, ks[i:i+1]) {
			return master, nil
		}
	}
	clear(master)
	from := d.MasterKey()
	if env != "" {
		from = secret.MasterKeyEnv + " (set, it wins over " + d.MasterKey() + ")"
	}
	return nil, fmt.Errorf("%w: the key in %s is not this store's; nothing was changed", secret.ErrWrongMasterKey, from)
}
