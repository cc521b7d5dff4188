package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/datadir"
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
//
// The token keeps to the admin_token_max_ttl the last server start
// recorded (recordAdminMaxTTL), as one made through the API does.
func CreateAdminTokenOffline(ctx context.Context, o OfflineOptions, name, role string, ttl time.Duration) (tok string, expires time.Time, err error) {
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
	maxTTL, err := recordedAdminMaxTTL(ctx, st)
	if err != nil {
		return "", time.Time{}, err
	}
	admins.LimitTTL(maxTTL)
	tok, expires, err = admins.Create(ctx, name, role, ttl, "local", noAddr())
	var re *authority.Error
	if errors.As(err, &re) {
		return "", time.Time{}, errors.New(re.Description)
	}
	return tok, expires, err
}

// metaAdminMaxTTL is the meta row holding the admin_token_max_ttl the last
// server start ran with, for admin token create --data-dir, which reads no
// server config.
const metaAdminMaxTTL = "admin_token_max_ttl"

// recordAdminMaxTTL records a starting server's admin_token_max_ttl (0:
// authority's default) for the offline path to keep to.
func recordAdminMaxTTL(ctx context.Context, st *store.DB, max time.Duration) error {
	if max <= 0 {
		max = authority.DefaultAdminMaxTTL
	}
	if err := st.PutMeta(ctx, metaAdminMaxTTL, []byte(max.String())); err != nil {
		return fmt.Errorf("recording admin_token_max_ttl: %w", err)
	}
	return nil
}

// recordedAdminMaxTTL returns the admin_token_max_ttl a server start
// recorded, 0 (authority's default) when none has been.
func recordedAdminMaxTTL(ctx context.Context, st *store.DB) (time.Duration, error) {
	b, err := st.GetMeta(ctx, metaAdminMaxTTL)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the server's admin_token_max_ttl: %w", err)
	}
	d, err := time.ParseDuration(string(b))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("the database's recorded admin_token_max_ttl %.40q is not a positive duration", b)
	}
	return d, nil
}
