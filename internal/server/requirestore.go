package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/mayfly-sh/mayfly/internal/datadir"
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
