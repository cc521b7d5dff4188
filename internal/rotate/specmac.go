package rotate

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
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

// headMACDomain separates the head's MAC from a row's.
const headMACDomain = "mayfly rotation head MAC v1\x00"

// HeadMAC is the MAC of the rotations' head (store.RotationHead) under
// key: its generation and its list of the MACs in force.
func HeadMAC(key []byte, gen int64, manifest string) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	h.Write([]byte(headMACDomain))
	binary.BigEndian.PutUint64(n[:], uint64(gen))
	h.Write(n[:])
	h.Write([]byte(manifest))
	return h.Sum(nil)
}

// headKeeper seals and checks the head for the store (and for authentic):
// a head older than seen (the newest this node has seen) is a rollback,
// which a write does not build on either.
type headKeeper struct {
	key  []byte
	seen *atomic.Int64
}

func (k headKeeper) SealHead(gen int64, manifest string) []byte { return HeadMAC(k.key, gen, manifest) }

func (k headKeeper) sealed(h store.RotationHead) bool {
	return len(h.MAC) > 0 && hmac.Equal(h.MAC, HeadMAC(k.key, h.Gen, h.Manifest))
}

func (k headKeeper) HeadAuthentic(h store.RotationHead) bool {
	return k.sealed(h) && h.Gen >= k.seen.Load()
}

func (k headKeeper) NextGen(gen int64) int64 { return max(gen, k.seen.Load()) + 1 }

// authentic reports why r's settings may not be acted on ("" when they
// may). A row's MAC says a node wrote the settings once; the head (a MAC
// over the list of the MACs in force, and a generation no lower than
// this node has seen) says they are the current ones, not older genuine
// ones a database writer put back. Without a key (Config.Key unset: tests
// of other parts) all are taken as they are.
func (m *Manager) authentic(ctx context.Context, r store.Rotation) (string, error) {
	if m.cfg.Key == nil {
		return "", nil
	}
	if len(r.MAC) == 0 || !hmac.Equal(r.MAC, SpecMAC(m.cfg.Key, r.Name, r.Spec)) {
		return "settings not authenticated", nil
	}
	h, err := m.cfg.Store.GetRotationHead(ctx)
	if err != nil {
		return "", fmt.Errorf("rotate %s: %w", r.Name, err)
	}
	if !m.heads().sealed(h) {
		return "rotation head not authenticated", nil
	}
	if floor := m.headSeen.Load(); h.Gen < floor {
		m.cfg.Logger.Error("rotate: the stored rotation head is older than one this node has seen: the rotations were rolled back in the database",
			"generation", h.Gen, "seen", floor)
		return "settings rolled back", nil
	}
	m.followHead(h.Gen)
	var list map[string]string
	if err := json.Unmarshal([]byte(h.Manifest), &list); err != nil || list[r.Name] != store.RotationMACDigest(r.MAC) {
		return "settings not the ones in force", nil
	}
	return "", nil
}

func (m *Manager) heads() headKeeper { return headKeeper{key: m.cfg.Key, seen: &m.headSeen} }

// followHead raises the newest head generation this node has seen (and
// tells HeadFollowed, which keeps it in the data dir).
func (m *Manager) followHead(gen int64) {
	for {
		seen := m.headSeen.Load()
		if gen <= seen {
			return
		}
		if m.headSeen.CompareAndSwap(seen, gen) {
			if m.cfg.HeadFollowed != nil {
				m.cfg.HeadFollowed(gen)
			}
			return
		}
	}
}

// HeadStore is what SealHead needs of the store (*store.DB).
type HeadStore interface {
	Rotations(ctx context.Context) ([]store.Rotation, error)
	SealRotationHead(ctx context.Context, macs map[string][]byte) (bool, error)
	GetRotationHead(ctx context.Context) (store.RotationHead, error)
}

// SealHead gives a head never sealed (a database upgraded from schema 16)
// the rotations whose own MAC verifies, once, recorded in the audit log
// (AuditType, reason "seal head", when it lists any), and then follows
// the head. The caller
// makes sure a node seals at most once (the server: only while its data
// dir has no head generation): after that, an unsealed head is one a
// database writer reset, and sealing it would make whatever rows it
// chose the ones in force. It returns whether it sealed.
func (m *Manager) SealHead(ctx context.Context, st HeadStore, by string) (bool, error) {
	if m.cfg.Key == nil {
		return false, errors.New("rotate: seal rotation head: no key")
	}
	rs, err := st.Rotations(ctx)
	if err != nil {
		return false, fmt.Errorf("rotate: seal rotation head: %w", err)
	}
	macs := map[string][]byte{}
	var names []string
	for _, r := range rs {
		if len(r.MAC) > 0 && hmac.Equal(r.MAC, SpecMAC(m.cfg.Key, r.Name, r.Spec)) {
			macs[r.Name] = r.MAC
			names = append(names, r.Name)
		}
	}
	sealed, err := st.SealRotationHead(ctx, macs)
	if err != nil {
		return false, fmt.Errorf("rotate: %w", err)
	}
	if sealed && len(names) > 0 { // a head of no rotation vouches for nothing
		ev := audit.Event{Type: AuditType, Admin: by, Status: 200, Reason: "seal head", Count: int64(len(names)),
			Detail: map[string]any{"secrets": names}}
		if _, err := m.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
			m.cfg.Logger.Warn("rotate: the rotation head's sealing is not in the audit log", "err", err)
		}
	}
	if h, err := st.GetRotationHead(ctx); err == nil && m.heads().HeadAuthentic(h) {
		m.followHead(h.Gen)
	}
	return sealed, nil
}

// refuse records a claimed rotation whose settings do not authenticate:
// audited as a failed attempt (502, refused, as mint's refused records:
// the upstream_failure alert rule fires on it), logged and counted by
// name (never the settings), and released until an hour from now, when
// it is refused again unless an admin set it anew.
func (m *Manager) refuse(ctx context.Context, r store.Rotation, by, source, why string) error {
	now := m.cfg.Now()
	ev := audit.Event{Type: AuditType, Secret: r.Name, Admin: by, Source: source, Status: 502, Reason: why,
		Detail: map[string]any{"refused": true}}
	if _, err := m.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
		m.cfg.Logger.Error("rotate: recording a refused rotation in the audit log failed", "secret", r.Name, "err", err)
	}
	m.cfg.Logger.Error("rotate: refusing stored rotation settings that are not authenticated as the ones in force: they were not written by a node holding this cluster's keys, or are older ones put back (planted, edited or replayed in the database); nothing is rotated",
		"secret", r.Name, "reason", why)
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
