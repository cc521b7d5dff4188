package rotate

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// ErrUnauthenticated: stored rotation settings whose MAC does not verify
// under this cluster's rotation key (Config.Key), or that have none. They
// were not written by a node holding the keys (a database writer planted
// or edited them), and are never acted on. It wraps ErrFailed.
var ErrUnauthenticated = fmt.Errorf("%w: the stored rotation settings are not authenticated (their MAC is missing or wrong: they were not written by a mayfly node holding this cluster's keys); nothing was rotated, set the rotation again after investigating", ErrFailed)

// specMACDomain separates this MAC from any other use of the key.
const specMACDomain = "mayfly rotation spec MAC v1\x00"

// SpecMAC is the MAC of a secret's stored rotation settings under key:
// HMAC-SHA-256 over the secret's name and the settings as stored, each
// length-prefixed, so that settings are valid for their own secret only.
// (The schedule and outcome columns change without a key and decide
// nothing an attacker could use: when, not what.)
func SpecMAC(key []byte, name, spec string) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	h.Write([]byte(specMACDomain))
	for _, f := range []string{name, spec} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return h.Sum(nil)
}

// authentic reports whether r's settings verify under the key. Without a
// key (Config.Key unset: tests of other parts) all are taken as they are.
func (m *Manager) authentic(r store.Rotation) bool {
	if m.cfg.Key == nil {
		return true
	}
	return len(r.MAC) > 0 && hmac.Equal(r.MAC, SpecMAC(m.cfg.Key, r.Name, r.Spec))
}

// refuse records a claimed rotation whose settings do not authenticate:
// audited as a failed attempt (502, refused, as mint's refused records:
// the upstream_failure alert rule fires on it), logged and counted by
// name (never the settings), and released until an hour from now, when
// it is refused again unless an admin set it anew.
func (m *Manager) refuse(ctx context.Context, r store.Rotation, by, source string) error {
	now := m.cfg.Now()
	ev := audit.Event{Type: AuditType, Secret: r.Name, Admin: by, Source: source, Status: 502, Reason: "settings not authenticated",
		Detail: map[string]any{"refused": true}}
	if _, err := m.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
		m.cfg.Logger.Error("rotate: recording a refused rotation in the audit log failed", "secret", r.Name, "err", err)
	}
	m.cfg.Logger.Error("rotate: refusing stored rotation settings that are not authenticated: they were not written by a node holding this cluster's keys (planted or edited in the database); nothing is rotated",
		"secret", r.Name)
	if m.cfg.Refused != nil {
		m.cfg.Refused(r.Name)
	}
	m.finish(ctx, r.Name, store.RotationOutcome{At: now, Error: "stored settings are not authenticated", NextAt: now.Add(time.Hour)})
	if m.cfg.Observer != nil {
		m.cfg.Observer.Rotated(r.Name, false)
		m.cfg.Observer.Failing(r.Name, r.Failures+1)
	}
	return fmt.Errorf("rotate %s: %w", r.Name, ErrUnauthenticated)
}

// RotationStore is what SealLegacy needs of the store (*store.DB).
type RotationStore interface {
	UnsealedRotations(ctx context.Context) ([]store.Rotation, error)
	RotationCounts(ctx context.Context) (all, sealed int64, err error)
	SealRotations(ctx context.Context, macs map[string]store.SealedRotation, n *store.Note) ([]string, error)
}

// SealLegacy gives a MAC to every stored rotation that has none: rows
// written before rotations were authenticated. It is the upgrade's
// one-time step, as authority.SealLegacyPolicies is for policy versions,
// and the caller must make sure it runs once only (the server allows it
// on a node whose data dir does not yet say rotations are sealed): after
// it, a row without a MAC is one a database writer planted. For the same
// reason it seals nothing once any stored rotation has a MAC. The sealing
// is recorded in the audit log (AuditType, reason "seal", naming the
// secrets) in the same transaction. It returns the secrets sealed.
func (m *Manager) SealLegacy(ctx context.Context, st RotationStore, by string) ([]string, error) {
	if m.cfg.Key == nil {
		return nil, errors.New("rotate: seal rotations: no key")
	}
	rs, err := st.UnsealedRotations(ctx)
	if err != nil {
		return nil, fmt.Errorf("rotate: seal rotations: %w", err)
	}
	if len(rs) == 0 {
		return nil, nil
	}
	if _, n, err := st.RotationCounts(ctx); err != nil {
		return nil, fmt.Errorf("rotate: seal rotations: %w", err)
	} else if n > 0 {
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = r.Name
		}
		m.cfg.Logger.Warn("rotate: not sealing the stored rotations without a MAC: the database's rotations are already authenticated, so these were not written by a node holding this cluster's keys (planted, or edited in the database); they are refused",
			"secrets", names)
		return nil, nil
	}
	macs := make(map[string]store.SealedRotation, len(rs))
	for _, r := range rs {
		macs[r.Name] = store.SealedRotation{Spec: r.Spec, MAC: SpecMAC(m.cfg.Key, r.Name, r.Spec)}
	}
	since := m.cfg.Audit.Size()
	note := &store.Note{Make: func(c store.Changes) ([][]byte, error) {
		rec, err := m.cfg.Audit.Record(audit.Event{Type: AuditType, Admin: by, Status: 200, Reason: "seal", Count: int64(len(c.SealedRotations)),
			Detail: map[string]any{"secrets": c.SealedRotations}})
		if err != nil {
			return nil, err
		}
		return [][]byte{rec}, nil
	}}
	sealed, err := st.SealRotations(ctx, macs, note)
	if err != nil {
		return nil, fmt.Errorf("rotate: seal rotations: %w", err)
	}
	if len(sealed) > 0 {
		if err := m.cfg.Audit.Settle(ctx, since, note); err != nil {
			m.cfg.Logger.Warn("rotate: the sealing's audit entry is recorded but not in the log yet", "err", err)
		}
	}
	return sealed, nil
}
