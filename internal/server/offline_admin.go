package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// CreateAdminTokenOffline makes an admin token straight in the data dir's
// storage, with the same admin.token.create entry as POST
// /v1/admin/tokens (by "local": whoever can read the data dir holds the
// master key anyway). It is the way back in when every admin token has
// expired or is lost: `mayfly admin token create --data-dir`. On embedded
// SQLite it refuses while a server runs (the audit journal's lock says
// so); nodes sharing PostgreSQL record the entry pending, for their
// sequencer to place.
func CreateAdminTokenOffline(ctx context.Context, o OfflineOptions, name, role string, ttl, maxTTL time.Duration) (tok string, expires time.Time, err error) {
	d := datadir.Dir(o.DataDir)
	if err := d.Require(); err != nil {
		return "", time.Time{}, err
	}
	dsn := o.Postgres
	if dsn == "" {
		dsn = os.Getenv("MAYFLY_POSTGRES")
	}
	if err := requireStore(ctx, d, dsn); err != nil {
		return "", time.Time{}, err
	}
	st, err := store.Open(ctx, store.Config{Path: d.Database(), PostgresDSN: dsn, BusyTimeout: 10 * time.Second})
	if err != nil {
		return "", time.Time{}, err
	}
	defer st.Close()
	signer, err := os.ReadFile(d.AuditKey())
	if err != nil {
		return "", time.Time{}, fmt.Errorf("audit key: %w", err)
	}
	if err := checkAuditKey(ctx, st, strings.TrimSpace(string(signer))); err != nil {
		clear(signer)
		return "", time.Time{}, err
	}
	aopts := auditlog.Options{Shared: dsn != ""}
	if dsn == "" && auditlog.JournalSupported() {
		// The journal's lock is also how a running server is noticed.
		aopts.Journal = d.AuditJournal()
	}
	log, err := auditlog.Open(ctx, st, strings.TrimSpace(string(signer)), aopts)
	clear(signer)
	if err != nil {
		if strings.Contains(err.Error(), "in use by another process") {
			return "", time.Time{}, fmt.Errorf("%w: create the token through it (mayfly admin token create NAME with an admin's MAYFLY_TOKEN), or stop it first", ErrServerRunning)
		}
		return "", time.Time{}, err
	}
	defer func() { err = errors.Join(err, log.Close(context.WithoutCancel(ctx))) }()
	master, err := secret.LoadMasterKey(d.MasterKey(), os.Getenv("MAYFLY_MASTER_KEY"))
	if err != nil {
		return "", time.Time{}, err
	}
	vault, err := secret.Open(ctx, st, master, secret.Options{})
	clear(master)
	if err != nil {
		return "", time.Time{}, err
	}
	defer vault.Close()
	hasher, err := tokenHasher(ctx, vault)
	if err != nil {
		return "", time.Time{}, err
	}
	admins := authority.NewAdmins(st, hasher, log, nil)
	admins.LimitTTL(maxTTL)
	tok, expires, err = admins.Create(ctx, name, role, ttl, "local", noAddr())
	var re *authority.Error
	if errors.As(err, &re) {
		return "", time.Time{}, errors.New(re.Description)
	}
	return tok, expires, err
}
