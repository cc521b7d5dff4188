package server

import (
	"context"
	"errors"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/datadir"
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
	off, err := openOffline(ctx, d, o, 10*time.Second, "create the token through it (mayfly admin token create NAME with an admin's MAYFLY_TOKEN), or stop it first")
	if err != nil {
		return "", time.Time{}, err
	}
	defer func() { err = errors.Join(err, off.close(ctx)) }()
	st, log, vault := off.st, off.log, off.vault
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
