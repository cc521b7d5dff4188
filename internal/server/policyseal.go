package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
)

// sealLegacyPolicies is the upgrade's one-time sealing of the policy
// versions stored before versions carried a MAC (schema 13), on a node
// whose data dir has never seen the cluster's versions authenticated.
//
// The record that it happened is a file in the data dir (PolicySealed),
// not a row of the database: whoever can write the database can put it
// back exactly as it was before the upgrade (drop the MACs, reset any
// marker row, even truncate the audit log with its checkpoints, which no
// node can tell from a shorter log), so any record there could be undone
// to have a planted row sealed. The data dir is on the node, beside
// master.key, where that writer does not reach. Every node writes the
// file at its first start on this release (having sealed, or found
// nothing to seal), init writes it at once, and init --join does unless
// the cluster's database still holds unsealed versions only (it was
// never sealed), so after the upgrade no node seals again: a row without
// a MAC is then refused like a wrong one. A node without the file also
// seals nothing once any stored version has a MAC
// (Authority.SealLegacyPolicies): a database once sealed needs no sealing.
// The sealing is also recorded in the audit log (policy.seal) for
// auditors.
func (s *Server) sealLegacyPolicies(ctx context.Context, d datadir.Dir) error {
	if _, err := os.Stat(d.PolicySealed()); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("policy versions: %w", err)
	}
	sealed, err := s.authority.SealLegacyPolicies(ctx, "upgrade")
	if err != nil {
		return err
	}
	if len(sealed) > 0 {
		s.log.Warn("policy: sealed the policy versions stored before versions were authenticated (once, at upgrade); from now on a version without a valid MAC is refused",
			"versions", sealed)
	}
	return writePolicySealed(d)
}

// writePolicySealed records in the data dir that this node must never
// seal a policy version again (sealLegacyPolicies).
func writePolicySealed(d datadir.Dir) error {
	b, _ := json.Marshal(map[string]any{"sealed_at": time.Now().UTC().Format(time.RFC3339)})
	if err := writeFileExcl(d.PolicySealed(), append(b, '\n'), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("policy versions: recording the upgrade's sealing: %w", err)
	}
	return nil
}

// sealLegacyRotations is sealLegacyPolicies for the rotations' stored
// settings (schema 16): sealed once, on a node whose data dir has never
// seen them authenticated (RotationSealed), for the same reasons.
func (s *Server) sealLegacyRotations(ctx context.Context, d datadir.Dir) error {
	if _, err := os.Stat(d.RotationSealed()); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotations: %w", err)
	}
	sealed, err := s.rotations.SealLegacy(ctx, s.store, "upgrade")
	if err != nil {
		return err
	}
	if len(sealed) > 0 {
		s.log.Warn("rotate: sealed the rotation settings stored before they were authenticated (once, at upgrade); from now on settings without a valid MAC are refused",
			"secrets", sealed)
	}
	return writeRotationSealed(d)
}

// writeRotationSealed records in the data dir that this node must never
// seal rotation settings again (sealLegacyRotations).
func writeRotationSealed(d datadir.Dir) error {
	b, _ := json.Marshal(map[string]any{"sealed_at": time.Now().UTC().Format(time.RFC3339)})
	if err := writeFileExcl(d.RotationSealed(), append(b, '\n'), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("rotations: recording the upgrade's sealing: %w", err)
	}
	return nil
}
