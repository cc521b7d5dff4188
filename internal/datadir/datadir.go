// Package datadir names the files of a mayfly data directory, so the
// server, init and offline tools agree on them. It owns names and the
// "is this initialised" test; it never reads or writes key material itself.
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Dir is a data directory.
type Dir string

// The files of a data directory.
func (d Dir) Database() string     { return filepath.Join(string(d), "mayfly.db") }
func (d Dir) MasterKey() string    { return filepath.Join(string(d), "master.key") }
func (d Dir) AuditKey() string     { return filepath.Join(string(d), "audit.key") }
func (d Dir) AuditPub() string     { return filepath.Join(string(d), "audit.pub") }
func (d Dir) CACert() string       { return filepath.Join(string(d), "ca.pem") }
func (d Dir) CAKey() string        { return filepath.Join(string(d), "ca-key.pem") }
func (d Dir) ServerCert() string   { return filepath.Join(string(d), "server.pem") }
func (d Dir) ServerKey() string    { return filepath.Join(string(d), "server-key.pem") }
func (d Dir) Marker() string       { return filepath.Join(string(d), "mayfly.json") }
func (d Dir) VerifyState() string  { return filepath.Join(string(d), "audit-verify.state") }
func (d Dir) AuditJournal() string { return filepath.Join(string(d), "audit.journal") }

// PolicySealed is the file whose presence says this node has seen the
// cluster's policy versions authenticated: it never seals an
// unauthenticated one again (server.sealLegacyPolicies).
func (d Dir) PolicySealed() string { return filepath.Join(string(d), "policy-sealed") }

// RotationSealed is PolicySealed for the rotations' stored settings: this
// node never seals unauthenticated ones again (server.sealLegacyRotations).
func (d Dir) RotationSealed() string { return filepath.Join(string(d), "rotation-sealed") }

// PolicyFloor is the file holding the newest policy version this node has
// put in force (decimal): a database whose latest version is older was
// rolled back, and the node refuses it (authority.Config.PolicyFloor).
func (d Dir) PolicyFloor() string { return filepath.Join(string(d), "policy-version") }

// RotationHeadFloor is PolicyFloor for the rotations' head: the newest
// generation this node has seen (rotate.Config.HeadFloor). Its presence
// also says this node never seals the head again (rotate.SealHead).
func (d Dir) RotationHeadFloor() string { return filepath.Join(string(d), "rotation-head") }

// Initialised reports whether d holds a finished init (its marker file,
// written last by init).
func (d Dir) Initialised() (bool, error) {
	_, err := os.Stat(d.Marker())
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("datadir: %w", err)
}

// Require returns an error unless d is initialised.
func (d Dir) Require() error {
	ok, err := d.Initialised()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not an initialised mayfly data directory (run mayfly init --data-dir %s)", string(d), string(d))
	}
	return nil
}
