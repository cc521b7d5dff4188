package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// ErrInitialised is returned by Init on a data dir that is initialised.
var ErrInitialised = errors.New("already initialised")

// freshDataDir checks that dir may become a node's data dir (init, join):
// not initialised, not another user's, and not one others may change.
func freshDataDir(dir string) (datadir.Dir, error) {
	d := datadir.Dir(dir)
	if ok, err := d.Initialised(); err != nil {
		return "", err
	} else if ok {
		return "", fmt.Errorf("%s: %w", dir, ErrInitialised)
	}
	if err := d.RequireOwner(); err != nil {
		return "", err
	}
	if err := d.RequireUnshared(); err != nil {
		return "", err
	}
	return d, nil
}

// makeDataDir creates dir (if missing) to hold files, none of which may be
// there yet: one left by an interrupted init is refused. remove undoes it
// after a failure, so that init or join can simply be run again: files,
// and dir if it was made here.
func makeDataDir(dir string, files []string) (remove func(), err error) {
	_, statErr := os.Stat(dir)
	created := os.IsNotExist(statErr)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return nil, fmt.Errorf("%s exists but the data dir is not initialised (an interrupted init?): remove the data dir and run init again", f)
		}
	}
	return func() {
		for _, f := range files {
			os.Remove(f)
		}
		if created {
			os.Remove(dir)
		}
	}, nil
}

// InitOptions are the inputs of Init.
type InitOptions struct {
	DataDir  string
	SANs     []string
	Postgres string
	// AdminName names the first admin token (default "root").
	AdminName string
}

// InitResult is what Init made. AdminToken is shown once and kept nowhere.
type InitResult struct {
	AdminToken string `json:"admin_token"`
	CAFile     string `json:"ca_file"`
	// AdminName and AdminExpires name the token and say when it expires;
	// not in the JSON, whose two fields SPEC §1 fixes.
	AdminName    string    `json:"-"`
	AdminExpires time.Time `json:"-"`
}

// Init creates a data directory: master key, TLS CA and server
// certificate, audit signing key, the store, and a first admin token. Every
// file is created exclusively; the marker is written last, so a crashed init
// is recognisable and a finished one is never overwritten. A failed init
// on PostgreSQL also erases what it wrote to the database.
func Init(ctx context.Context, o InitOptions) (res *InitResult, err error) {
	if err := checkSANs(o.SANs); err != nil {
		return nil, err
	}
	d, err := freshDataDir(o.DataDir)
	if err != nil {
		return nil, err
	}
	if o.Postgres != "" {
		// A shared database initialised by another data dir already has
		// its keyring: a second master key could never open it.
		if err := requireFreshDatabase(ctx, o.Postgres); err != nil {
			return nil, err
		}
	}
	files := []string{d.MasterKey(), d.AuditKey(), d.AuditPub(), d.CACert(), d.CAKey(), d.ServerCert(), d.ServerKey(), d.Database(), d.PolicySealed(), d.RotationSealed()}
	remove, err := makeDataDir(o.DataDir, files)
	if err != nil {
		return nil, err
	}
	// A failed init leaves nothing behind, so it can simply be run again.
	var master []byte // set once loaded: what it sealed, it may undo
	// The master key is made first, exclusively: an init refused there
	// lost to another one running at once on the same dir, and the files
	// are that one's, not this one's to remove.
	claimed := false
	defer func() {
		if err == nil || !claimed {
			return
		}
		if o.Postgres != "" && master != nil {
			// Without this, the database keeps a keyring that only the
			// master key removed below opens: every later init is refused
			// and no node can ever join.
			erased, uerr := undoInitPostgres(o.Postgres, master)
			if uerr != nil {
				err = fmt.Errorf("%w; removing what init wrote to the PostgreSQL database failed too (%v): the data dir %s is kept, as its master key is the only one that opens the keyring left there; to start over, drop the database's mayfly tables and remove the data dir", err, uerr, o.DataDir)
				return
			}
			if erased {
				err = fmt.Errorf("%w; what init wrote to the PostgreSQL database was removed, so it can be run again", err)
			}
		}
		os.Remove(d.Database() + "-wal")
		os.Remove(d.Database() + "-shm")
		remove()
	}()
	if err := secret.GenerateMasterKeyFile(d.MasterKey()); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	claimed = true
	signer, verifier, err := audit.GenerateKey(audit.DefaultOrigin)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := writeFileExcl(d.AuditKey(), []byte(signer+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := writeFileExcl(d.AuditPub(), []byte(verifier+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := generateTLS(d.CACert(), d.CAKey(), d.ServerCert(), d.ServerKey(), o.SANs, time.Now()); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	master, err = secret.LoadMasterKey(d.MasterKey(), "")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{Path: d.Database(), PostgresDSN: o.Postgres})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	vault, err := secret.Open(ctx, st, master, secret.Options{})
	if err != nil {
		return nil, err
	}
	defer vault.Close()
	hasher, err := tokenHasher(ctx, vault)
	if err != nil {
		return nil, err
	}
	if err := checkAuditKey(ctx, st, signer); err != nil {
		return nil, err
	}
	log, err := auditlog.Open(ctx, st, signer, auditlog.Options{})
	if err != nil {
		return nil, err
	}
	name := o.AdminName
	if name == "" {
		name = "root"
	}
	admins := authority.NewAdmins(st, hasher, log, nil)
	tok, expires, err := admins.Create(ctx, name, authority.RoleAdmin, 0, "init", noAddr())
	if err != nil {
		log.Close(ctx)
		return nil, fmt.Errorf("first admin token: %w", err)
	}
	if err := log.Close(ctx); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// A fresh database has no policy version from before they were
	// authenticated: this node must never seal one (sealLegacyPolicies).
	if err := writePolicySealed(d); err != nil {
		return nil, err
	}
	if err := writeRotationSealed(d); err != nil {
		return nil, err
	}
	marker, _ := json.Marshal(map[string]any{"initialised_at": time.Now().UTC().Format(time.RFC3339), "schema": store.SchemaVersion()})
	if err := writeFileExcl(d.Marker(), append(marker, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("marker: %w", err)
	}
	return &InitResult{AdminToken: tok, CAFile: d.CACert(), AdminName: name, AdminExpires: expires}, nil
}

// tokenHasher returns the keyed hash for tokens, its key a sealed system
// secret shared by every node of the cluster.
func tokenHasher(ctx context.Context, v *secret.Vault) (*token.Hasher, error) {
	k, err := v.SystemKey(ctx, "token-hmac", 32)
	if err != nil {
		return nil, fmt.Errorf("token hash key: %w", err)
	}
	return token.NewHasher(k)
}

// undoInitPostgres erases what a failed init wrote to the PostgreSQL
// database at dsn, if the keyring there is the one master seals (never
// another init's). Init's own context may be why it failed (Ctrl-C), so
// this runs on a fresh one, bounded.
func undoInitPostgres(dsn string, master []byte) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
	if err != nil {
		return false, err
	}
	defer st.Close()
	return st.UndoInit(ctx, func(kvs []store.KeyVersion) bool { return secret.SealedBy(master, kvs) })
}

// requireFreshDatabase refuses a PostgreSQL database that holds a keyring.
func requireFreshDatabase(ctx context.Context, dsn string) error {
	st, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
	if err != nil {
		return err
	}
	defer st.Close()
	ks, err := st.KeyVersions(ctx)
	if err != nil {
		return err
	}
	if len(ks) > 0 {
		return fmt.Errorf("the PostgreSQL database is initialised by another data dir: %w (add a node with mayfly init --join instead)", ErrInitialised)
	}
	return nil
}
