package authority

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// ErrPolicyUnauthenticated: a stored policy version whose MAC does not
// verify under this cluster's policy key (Config.PolicyKey), or that has
// none. It was not written by a node holding the keys (a database writer
// planted or edited it), and is never put in force.
var ErrPolicyUnauthenticated = errors.New("policy version not authenticated")

// UnauthenticatedPolicyError names the refused version (never its source).
type UnauthenticatedPolicyError struct {
	Version int64
}

func (e *UnauthenticatedPolicyError) Error() string {
	return fmt.Sprintf("stored policy version %d is not authenticated (its MAC is missing or wrong: it was not written by a mayfly node holding this cluster's keys)", e.Version)
}

func (e *UnauthenticatedPolicyError) Unwrap() error { return ErrPolicyUnauthenticated }

// ErrPolicyRolledBack: the latest stored policy version is older than
// one this node put in force (Config.PolicyFloor, or the version in
// force): newer genuine versions were deleted from the database. It is
// never put in force, and no version is applied over it.
var ErrPolicyRolledBack = errors.New("stored policy versions rolled back")

// RolledBackPolicyError names the latest stored version and the newer one
// this node has enforced.
type RolledBackPolicyError struct {
	Version, Enforced int64
}

func (e *RolledBackPolicyError) Error() string {
	return fmt.Sprintf("stored policy versions were rolled back: the latest is version %d, but this node has enforced version %d (newer versions were deleted from the database)", e.Version, e.Enforced)
}

func (e *RolledBackPolicyError) Unwrap() error { return ErrPolicyRolledBack }

// policyMACDomain separates this MAC from any other use of the key.
const policyMACDomain = "mayfly policy version MAC v1\x00"

// PolicyMAC is the MAC of a stored policy version under key: HMAC-SHA-256
// over every field that decides what is enforced or shown as its origin
// (version, hash, source, applied_at to the nanosecond as stored,
// applied_by), each length-prefixed so that no two versions encode alike.
func PolicyMAC(key []byte, pv store.PolicyVersion) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	h.Write([]byte(policyMACDomain))
	binary.BigEndian.PutUint64(n[:], uint64(pv.Version))
	h.Write(n[:])
	field([]byte(pv.Hash))
	field(pv.Source)
	var at int64 // as the store keeps it: nanoseconds, 0 for no time
	if !pv.AppliedAt.IsZero() {
		at = pv.AppliedAt.UnixNano()
	}
	binary.BigEndian.PutUint64(n[:], uint64(at))
	h.Write(n[:])
	field([]byte(pv.AppliedBy))
	return h.Sum(nil)
}

// PolicyAuthentic reports whether pv's MAC verifies under the policy key.
// Without a key (Config.PolicyKey unset: tests of other parts) every
// version is taken as it is.
func (a *Authority) PolicyAuthentic(pv store.PolicyVersion) bool {
	if a.cfg.PolicyKey == nil {
		return true
	}
	return len(pv.MAC) > 0 && hmac.Equal(pv.MAC, PolicyMAC(a.cfg.PolicyKey, pv))
}

// sealPolicy sets pv's MAC for writing it.
func (a *Authority) sealPolicy(pv store.PolicyVersion) store.PolicyVersion {
	if a.cfg.PolicyKey != nil {
		pv.MAC = PolicyMAC(a.cfg.PolicyKey, pv)
	}
	return pv
}

// refusePolicy reports a stored version that does not authenticate: logged
// and counted once per version (the sync that meets it runs every 2 s).
func (a *Authority) refusePolicy(v int64) error {
	if a.refused.Swap(v) != v {
		a.cfg.Logger.Error("policy: refusing a stored policy version that is not authenticated: it was not written by a node holding this cluster's keys (planted or edited in the database); the version in force stays",
			"version", v, "in_force", a.current.Load().version)
		if a.cfg.PolicyRefused != nil {
			a.cfg.PolicyRefused(v)
		}
	}
	return &UnauthenticatedPolicyError{Version: v}
}

// checkRollback refuses a latest stored version v (0: none) below the
// version in force or the floor this node keeps: logged and counted once
// per version, as refusePolicy does.
func (a *Authority) checkRollback(v int64) error {
	floor := max(a.current.Load().version, a.cfg.PolicyFloor)
	if v >= floor {
		return nil
	}
	if key := -v - 1; a.refused.Swap(key) != key { // negative: not mistaken for a MAC refusal of v
		a.cfg.Logger.Error("policy: refusing the latest stored policy version: it is older than one this node has enforced, so newer versions were deleted from the database (rolled back); the version in force stays",
			"version", v, "enforced", floor)
		if a.cfg.PolicyRefused != nil {
			a.cfg.PolicyRefused(v)
		}
	}
	return &RolledBackPolicyError{Version: v, Enforced: floor}
}

// SealLegacyPolicies gives a MAC to every stored policy version that has
// none: rows written before policy versions were authenticated. It is the
// upgrade's one-time step, and the caller must make sure it runs once
// only (the server allows it on a node whose data dir does not yet say the
// cluster's policy versions are sealed): after it, a row without a MAC is
// one a database writer planted, and sealing it would make it authentic.
// For the same reason it seals nothing once any stored version has a MAC
// (the database was sealed: by another node, or written by this release),
// whatever this node's data dir says; those rows are left to be refused.
// The sealing is recorded in the audit log (policy.seal, naming the
// versions) in the same transaction. It returns the versions it sealed.
func (a *Authority) SealLegacyPolicies(ctx context.Context, by string) ([]int64, error) {
	if a.cfg.PolicyKey == nil {
		return nil, errors.New("authority: seal policy versions: no policy key")
	}
	pvs, err := a.cfg.Policies.UnsealedPolicyVersions(ctx)
	if err != nil {
		return nil, fmt.Errorf("authority: seal policy versions: %w", err)
	}
	if len(pvs) == 0 {
		return nil, nil
	}
	if _, n, err := a.cfg.Policies.PolicyVersionCounts(ctx); err != nil {
		return nil, fmt.Errorf("authority: seal policy versions: %w", err)
	} else if n > 0 {
		vs := make([]int64, len(pvs))
		for i, pv := range pvs {
			vs[i] = pv.Version
		}
		a.cfg.Logger.Warn("policy: not sealing the stored policy versions without a MAC: the database's versions are already authenticated, so these were not written by a node holding this cluster's keys (planted, or edited in the database); they are refused",
			"versions", vs)
		return nil, nil
	}
	macs := make(map[int64][]byte, len(pvs))
	for _, pv := range pvs {
		macs[pv.Version] = PolicyMAC(a.cfg.PolicyKey, pv)
	}
	since := a.cfg.Audit.Size()
	note := noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
		return []audit.Event{{Type: audit.TypePolicySeal, Admin: by, Status: 200, Count: int64(len(c.Sealed)),
			Detail: map[string]any{"versions": c.Sealed}}}
	})
	sealed, err := a.cfg.Policies.SealPolicyVersions(ctx, macs, note)
	if err != nil {
		return nil, failed("policy seal", err)
	}
	if len(sealed) > 0 {
		settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	}
	return sealed, nil
}
