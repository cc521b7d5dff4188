// Package rotate owns rotation as code for stored secrets: the settings a
// secret may carry (how often, the grace period of the replaced value, and
// which rotator makes the new one), their validation, the rotators
// (postgres_password, and command rotators named by the server's config
// file), the schedule that survives restarts, and the claim that lets one
// node of a cluster rotate a secret at a time. Every attempt is audited
// before it starts and when it ends; a failed attempt leaves the current
// value working and is counted, recorded and shown.
//
// It never runs a program an API caller names (only the config file's
// rotators), never runs one through a shell, and never writes a value, a
// DSN or a rotator's output into an error, a log line, an audit entry, a
// metric or a store row other than the sealed secret itself.
package rotate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// AuditType is the audit entry of a rotation attempt: one when it starts
// (reason "started"), one when it ends (status 200 and the version
// written, or 502 and why it failed).
const AuditType = "secret.rotate"

// Errors callers test with errors.Is (besides ErrInvalid).
var (
	// ErrNoRotation: the secret exists but carries no rotation.
	ErrNoRotation = errors.New("the secret has no rotation")
	// ErrBusy: another attempt (on this node or another) is running.
	ErrBusy = errors.New("a rotation of this secret is already running")
	// ErrFailed wraps a rotator's failure (the current value still works).
	// An attempt that could not be audited did not run: its error wraps
	// failclosed.ErrUnavailable.
	ErrFailed = errors.New("rotation failed")
	// ErrChanged: an admin replaced or deleted the secret while it was
	// rotated. That change stands; the attempt stored nothing and is
	// recorded (status 409) and counted as failed.
	ErrChanged = errors.New("the secret was replaced or deleted while it was rotated: that change stands and the rotated value was discarded")
)

// Store keeps rotation settings and state (*store.DB).
type Store interface {
	SetRotation(ctx context.Context, name, spec string, mac []byte, nextAt time.Time) error
	DeleteRotation(ctx context.Context, name string) error
	GetRotation(ctx context.Context, name string) (store.Rotation, error)
	Rotations(ctx context.Context) ([]store.Rotation, error)
	DueRotations(ctx context.Context, now time.Time, limit int) ([]store.Rotation, error)
	ClaimRotation(ctx context.Context, name, node string, now, until time.Time) (store.Rotation, error)
	FinishRotation(ctx context.Context, name, node string, o store.RotationOutcome) error
	GetRotationHead(ctx context.Context) (store.RotationHead, error)
}

// Vault reads and writes secret values (*secret.Vault). A new value is
// put in use with its entry (n) in one store transaction: written so
// (PutKeepingNoted), or staged first and promoted (postgres_password).
// Each write names the live version it was made from (base), and is
// refused (store.ErrSecretChanged) once that is no longer the live one.
type Vault interface {
	Reveal(ctx context.Context, name string) ([]byte, int, error)
	PutKeepingNoted(ctx context.Context, name string, value []byte, base int, keepUntil time.Time, n *store.Note) (int, error)
	Stage(ctx context.Context, name string, value []byte, base int) (int, error)
	RevealPending(ctx context.Context, name string) ([]byte, int, error)
	Promote(ctx context.Context, name string, version, base int, keepUntil time.Time, n *store.Note) error
	Meta(ctx context.Context, name string) (secret.Meta, error)
}

// Auditor records entries (*auditlog.Log): an attempt waits for its
// "started" entry (Future.Wait), which the log makes durable before
// answering. The entry of a successful attempt is written by the store
// transaction that stores the new value instead (Record, then Settle
// for its index: see auditlog's pending records), so that the value never
// stands without it.
type Auditor interface {
	Add(ctx context.Context, ev audit.Event) auditlog.Future
	Size() int64
	Record(ev audit.Event) ([]byte, error)
	Settle(ctx context.Context, since int64, note *store.Note) error
}

// Observer is told every attempt's outcome (the server counts them in
// metrics) and each secret's failures since its last success; failures
// -1 means the secret is no longer rotated.
type Observer interface {
	Rotated(secretName string, ok bool)
	Failing(secretName string, failures int)
}

// Config wires a Manager.
type Config struct {
	Store Store
	Vault Vault
	Audit Auditor
	// Rotators are the config file's command rotators: name → argv.
	Rotators map[string][]string
	// Node names this process in claims (unique per node).
	Node string
	// Timeout bounds one attempt: the command or the database (default 30 s,
	// at most MaxTimeout).
	Timeout time.Duration
	// Interval is how often the schedule is checked (default 10 s).
	Interval time.Duration
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
	// Key authenticates stored rotation settings (SpecMAC): settings whose
	// MAC does not verify are never acted on. Nil: not checked (tests of
	// other parts); the server always sets it.
	Key []byte
	// Refused, when set, is told each refusal of settings that do not
	// authenticate (the server counts them).
	Refused func(secretName string)
	// HeadFloor is the newest generation of the rotations' head this node
	// has seen (its data dir keeps it, HeadFollowed): an older head means
	// the rotations were rolled back in the database, and is refused.
	HeadFloor int64
	// HeadFollowed, when set, is told each newer head generation seen.
	HeadFollowed func(gen int64)
}

// MaxTimeout bounds Config.Timeout: far longer than any rotation takes,
// and a claim lasts twice it plus a minute from now (claimFor), which must
// stay a time.Duration and a time the store can keep.
const MaxTimeout = 24 * time.Hour

// Manager rotates secrets on schedule and on demand.
type Manager struct {
	cfg      Config
	headSeen atomic.Int64 // the newest head generation seen (followHead)
}

// headKeeping is a store that keeps the rotations' head (*store.DB).
type headKeeping interface {
	KeepRotationHead(k store.RotationHeadKeeper)
}

// New returns a Manager; Run starts its schedule.
func New(cfg Config) (*Manager, error) {
	if err := CheckRotators(cfg.Rotators); err != nil {
		return nil, err
	}
	if cfg.Node == "" {
		cfg.Node = rand.Text()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Timeout > MaxTimeout {
		return nil, fmt.Errorf("rotation: timeout %s is over %s", cfg.Timeout, MaxTimeout)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg}
	m.headSeen.Store(cfg.HeadFloor)
	if hk, ok := cfg.Store.(headKeeping); ok && cfg.Key != nil {
		hk.KeepRotationHead(m.heads())
	}
	return m, nil
}

// claimFor is how long a claim lasts: past the attempt's own timeout, so a
// live attempt is never taken over; a node that died mid-attempt is taken
// over once it ends.
func (m *Manager) claimFor() time.Duration { return 2*m.cfg.Timeout + time.Minute }

// Parse validates the rotation settings of secret name (ErrInvalid), given
// by a caller with the admin role or not (ErrNeedsAdmin).
func (m *Manager) Parse(ctx context.Context, name string, raw []byte, admin bool) (Spec, error) {
	names := make([]string, 0, len(m.cfg.Rotators))
	for n := range m.cfg.Rotators {
		names = append(names, n)
	}
	slices.Sort(names)
	return ParseSpec(name, raw, Checks{Rotators: names, Admin: admin, SecretExists: func(s string) bool {
		_, err := m.cfg.Vault.Meta(ctx, s)
		return err == nil
	}})
}

// Set gives secret name the rotation s, first due one period from now
// (keeping its history); nil removes its rotation (no error when it had
// none).
func (m *Manager) Set(ctx context.Context, name string, s *Spec) error {
	if s == nil {
		if err := m.cfg.Store.DeleteRotation(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("rotate: %w", err)
		}
		return nil
	}
	c, err := m.Change(name, s)
	if err != nil {
		return err
	}
	if err := m.cfg.Store.SetRotation(ctx, name, c.Spec, c.MAC, c.NextAt); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}

// Change is what Set writes, for a caller that writes it together with
// the secret's value (store.PutSecretRotating): s for secret name, with
// its MAC, first due one period from now, or nil to remove the rotation.
func (m *Manager) Change(name string, s *Spec) (*store.RotationChange, error) {
	if s == nil {
		return &store.RotationChange{Remove: true}, nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	c := &store.RotationChange{Spec: string(b), NextAt: m.cfg.Now().Add(time.Duration(s.Every))}
	if m.cfg.Key != nil {
		c.MAC = SpecMAC(m.cfg.Key, name, c.Spec)
	}
	return c, nil
}

// State is a secret's rotation as shown to admins: never a value.
type State struct {
	Spec        Spec
	NextAt      time.Time
	LastAt      time.Time
	LastVersion int
	Failures    int
	LastError   string
	LastErrorAt time.Time
}

func toState(r store.Rotation) (State, error) {
	var s Spec
	if err := json.Unmarshal([]byte(r.Spec), &s); err != nil {
		return State{}, fmt.Errorf("rotate: stored settings of %s do not parse: %w", r.Name, err)
	}
	return State{Spec: s, NextAt: r.NextAt, LastAt: r.LastAt, LastVersion: r.LastVersion, Failures: r.Failures,
		LastError: r.LastError, LastErrorAt: r.LastErrorAt}, nil
}

// Get returns name's rotation state (ErrNoRotation when it has none).
func (m *Manager) Get(ctx context.Context, name string) (State, error) {
	r, err := m.cfg.Store.GetRotation(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return State{}, ErrNoRotation
	}
	if err != nil {
		return State{}, fmt.Errorf("rotate: %w", err)
	}
	return toState(r)
}

// All returns every rotation state by secret name.
func (m *Manager) All(ctx context.Context) (map[string]State, error) {
	rs, err := m.cfg.Store.Rotations(ctx)
	if err != nil {
		return nil, fmt.Errorf("rotate: %w", err)
	}
	out := make(map[string]State, len(rs))
	for _, r := range rs {
		s, err := toState(r)
		if err != nil {
			return nil, err
		}
		out[r.Name] = s
	}
	return out, nil
}

// Result is a successful rotation.
type Result struct {
	Version  int
	NextAt   time.Time
	GraceEnd time.Time
}

// Rotate rotates secret name now, for by (an admin's name, or "schedule").
// It fails with ErrNoRotation, ErrBusy, failclosed.ErrUnavailable (not audited, did
// not run), ErrFailed (the rotator failed: recorded, counted, the current
// value kept), ErrChanged (an admin's write or delete came first: recorded,
// counted) or secret.ErrNotFound. Once it has claimed the secret, the
// end of ctx no longer stops it: the attempt runs to its end (bounded by
// Config.Timeout) and is recorded.
func (m *Manager) Rotate(ctx context.Context, name, by, source string) (Result, error) {
	if _, err := m.cfg.Vault.Meta(ctx, name); err != nil {
		return Result{}, err
	}
	now := m.cfg.Now()
	r, err := m.cfg.Store.ClaimRotation(ctx, name, m.cfg.Node, now, now.Add(m.claimFor()))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Result{}, ErrNoRotation
	case errors.Is(err, store.ErrConflict):
		return Result{}, ErrBusy
	case err != nil:
		return Result{}, fmt.Errorf("rotate %s: %w", name, err)
	}
	// Claimed, the attempt runs to its end whatever the caller does (an
	// HTTP client gone, a CLI's timeout): a rotator changes the credential
	// upstream before it answers, and cutting it off there lost the new
	// value while the old one no longer worked. Its own timeout bounds it.
	return m.attempt(context.WithoutCancel(ctx), r, by, source)
}

// attempt runs one claimed rotation and records its outcome.
func (m *Manager) attempt(ctx context.Context, r store.Rotation, by, source string) (Result, error) {
	name := r.Name
	// Checked before anything reads the settings: they name the role and
	// admin DSN of an ALTER ROLE, or the rotator a value is fed to.
	why, err := m.authentic(ctx, r)
	if err != nil {
		m.finish(ctx, name, store.RotationOutcome{At: m.cfg.Now(), Error: "reading the rotation head failed", NextAt: m.cfg.Now().Add(time.Minute)})
		return Result{}, err
	}
	if why != "" {
		return Result{}, m.refuse(ctx, r, by, source, why)
	}
	st, err := toState(r)
	if err != nil {
		m.finish(ctx, name, store.RotationOutcome{At: m.cfg.Now(), Error: "stored settings do not parse", NextAt: m.cfg.Now().Add(time.Hour)})
		return Result{}, err
	}
	spec := st.Spec
	ev := audit.Event{Type: AuditType, Secret: name, Admin: by, Source: source, Reason: "started", Detail: map[string]any{"via": spec.Kind()}}
	if _, err := m.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
		// Not recorded, so not done; the claim is released and the
		// schedule tries again soon.
		m.finish(context.WithoutCancel(ctx), name, store.RotationOutcome{At: m.cfg.Now(), Error: "audit log unavailable", NextAt: m.cfg.Now().Add(time.Minute)})
		return Result{}, fmt.Errorf("rotate %s: rotation not recorded, %w: %w", name, failclosed.ErrUnavailable, err)
	}
	// The outcome of a success is recorded by the write of the new value
	// (run); a failure changed nothing, and its entry is added here.
	ev.Reason, ev.Status = "", 200
	ev.Detail = map[string]any{"via": spec.Kind()} // the started entry's map is its own
	version, graceEnd, rerr := m.run(ctx, name, spec, ev)
	now := m.cfg.Now()
	out := store.RotationOutcome{At: now, Version: version}
	if rerr != nil {
		out.Error = truncate(rerr.Error(), 500)
		out.NextAt = now.Add(backoff(r.Failures+1, time.Duration(spec.Every)))
		ev.Status, ev.Reason = 502, out.Error
		if errors.Is(rerr, ErrChanged) {
			ev.Status = 409 // an admin's change won, not an upstream failure
		}
		if _, err := m.cfg.Audit.Add(context.WithoutCancel(ctx), ev).Wait(context.WithoutCancel(ctx)); err != nil {
			m.cfg.Logger.Error("rotate: recording the failure in the audit log failed", "secret", name, "err", err)
		}
	} else {
		out.NextAt = now.Add(time.Duration(spec.Every))
	}
	m.finish(context.WithoutCancel(ctx), name, out)
	if m.cfg.Observer != nil {
		m.cfg.Observer.Rotated(name, rerr == nil)
		f := 0
		if rerr != nil {
			f = r.Failures + 1
		}
		m.cfg.Observer.Failing(name, f)
	}
	if rerr != nil {
		m.cfg.Logger.Warn("rotate: rotation failed; the current value stays in use", "secret", name, "via", spec.Kind(), "err", out.Error, "next", out.NextAt)
		if errors.Is(rerr, ErrChanged) {
			return Result{}, fmt.Errorf("rotate %s: %w", name, rerr)
		}
		return Result{}, fmt.Errorf("rotate %s: %w: %s", name, ErrFailed, out.Error)
	}
	m.cfg.Logger.Info("rotate: secret rotated", "secret", name, "version", version, "via", spec.Kind())
	return Result{Version: version, NextAt: out.NextAt, GraceEnd: graceEnd}, nil
}

func (m *Manager) finish(ctx context.Context, name string, o store.RotationOutcome) {
	if err := m.cfg.Store.FinishRotation(ctx, name, m.cfg.Node, o); err != nil {
		m.cfg.Logger.Error("rotate: recording the outcome failed", "secret", name, "err", err)
	}
}

// backoff is when a failing rotation is tried again: 1, 2, 4… minutes,
// at most an hour and at most its period.
func backoff(failures int, every time.Duration) time.Duration {
	d := time.Minute << min(failures-1, 6)
	return min(d, time.Hour, every)
}

// run reads the current value, has the rotator make and apply a new one,
// and stores it, keeping the current one for the grace period. The new
// version becomes live with its outcome entry, ev completed (status 200,
// the version, the grace period's end), in one transaction: a value that
// cannot be recorded is not put in use. Every write is made from the
// version read here, and fails with ErrChanged when an admin replaced or
// deleted the secret since: the new value derives from the old one, and
// storing it would undo the admin's change.
func (m *Manager) run(ctx context.Context, name string, spec Spec, ev audit.Event) (int, time.Time, error) {
	cur, base, err := m.cfg.Vault.Reveal(ctx, name)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("read the current value: %w", err)
	}
	defer clear(cur)
	rot, err := m.rotator(spec)
	if err != nil {
		return 0, time.Time{}, err
	}
	var version int
	var graceEnd time.Time
	// live makes a stored value live with its entry: write is the store
	// call, given the grace period's end and the entry's Note.
	live := func(ctx context.Context, resumed bool, write func(keep time.Time, n *store.Note) (int, error)) error {
		graceEnd = m.cfg.Now().Add(spec.GraceOrDefault())
		keep := graceEnd
		if spec.GraceOrDefault() == 0 {
			keep = time.Time{}
		}
		since := m.cfg.Audit.Size()
		note := &store.Note{Make: func(c store.Changes) ([][]byte, error) {
			e := ev
			e.SecretVersion = c.SecretVersion
			e.Detail = map[string]any{"via": spec.Kind(), "grace_until": graceEnd.UTC().Format(time.RFC3339)}
			if resumed {
				e.Detail["resumed"] = true // it settles an attempt that did not finish
			}
			rec, err := m.cfg.Audit.Record(e)
			if err != nil {
				return nil, err
			}
			return [][]byte{rec}, nil
		}}
		ver, err := write(keep, note)
		if err != nil {
			return err
		}
		version = ver
		// The entry is durable already (its value's commit made it so): a
		// failure only delays its index, logged, never returned.
		if err := m.cfg.Audit.Settle(context.WithoutCancel(ctx), since, note); err != nil {
			m.cfg.Logger.Warn("rotate: the rotation's audit entry is recorded but not in the log yet", "err", err)
		}
		return nil
	}
	w := writer{commit: func(ctx context.Context, v []byte) error {
		return live(ctx, false, func(keep time.Time, n *store.Note) (int, error) {
			ver, err := m.cfg.Vault.PutKeepingNoted(ctx, name, v, base, keep, n)
			if errors.Is(err, store.ErrSecretChanged) {
				return 0, ErrChanged
			}
			if err != nil {
				return 0, fmt.Errorf("store the new value: %w", err)
			}
			return ver, nil
		})
	}}
	if spec.Via.PostgresPassword != nil {
		pending, pver, err := m.cfg.Vault.RevealPending(ctx, name)
		if err != nil && !errors.Is(err, secret.ErrNotFound) {
			return 0, time.Time{}, fmt.Errorf("read the staged value: %w", err)
		}
		defer clear(pending)
		w.pending = pending
		w.stage = func(ctx context.Context, v []byte) error {
			ver, err := m.cfg.Vault.Stage(ctx, name, v, base)
			if errors.Is(err, store.ErrSecretChanged) {
				// Returned before the ALTER ROLE commits: it is rolled back.
				return fmt.Errorf("%w; the role's password was not changed", ErrChanged)
			}
			if err != nil {
				return fmt.Errorf("store the new value: %w", err)
			}
			pver = ver
			return nil
		}
		w.promote = func(ctx context.Context) error {
			return live(ctx, pending != nil, func(keep time.Time, n *store.Note) (int, error) {
				err := m.cfg.Vault.Promote(ctx, name, pver, base, keep, n)
				if errors.Is(err, store.ErrSecretChanged) {
					// The admin's write or delete destroyed the staged
					// value; the role is left with the password set, and
					// a next attempt (for a secret still rotated) sets one
					// for the value then in use.
					return 0, fmt.Errorf("%w; the role's ALTER ROLE had committed, so the role may have a password no stored value holds until the secret's next rotation", ErrChanged)
				}
				if err != nil {
					return 0, fmt.Errorf("the role has the new password, but putting its value in use failed (the next attempt settles it): %w", err)
				}
				return pver, nil
			})
		}
	}
	if err := rot.Rotate(ctx, name, cur, w); err != nil {
		return 0, time.Time{}, scrub(err, cur, w.pending)
	}
	return version, graceEnd, nil
}

// writer is how a rotator stores its new value: a command rotator commits
// it (stored live with its entry, in one step); postgres_password stages
// it (stored, not in use) before its ALTER ROLE commits and promotes it
// after, because the role and the store cannot commit together.
type writer struct {
	commit func(ctx context.Context, v []byte) error
	// pending is a value an earlier attempt staged and did not promote
	// (nil: none): the role may have it already.
	pending []byte
	stage   func(ctx context.Context, v []byte) error
	promote func(ctx context.Context) error
}

type rotator interface {
	Rotate(ctx context.Context, secretName string, current []byte, w writer) error
}

func (m *Manager) rotator(spec Spec) (rotator, error) {
	if c := spec.Via.Command; c != "" {
		argv, ok := m.cfg.Rotators[c]
		if !ok {
			// The config file changed since the secret was set.
			return nil, fmt.Errorf("rotator %q is no longer in the server's config file", c)
		}
		return commandRotator{name: c, argv: argv, timeout: m.cfg.Timeout}, nil
	}
	return postgresRotator{cfg: *spec.Via.PostgresPassword, timeout: m.cfg.Timeout, reveal: func(ctx context.Context, n string) ([]byte, error) {
		v, _, err := m.cfg.Vault.Reveal(ctx, n)
		return v, err
	}}, nil
}

// scrub keeps any value that reached an error's text out of it (the
// rotators never put one there; this is the second line).
func scrub(err error, values ...[]byte) error {
	msg := err.Error()
	changed := false
	for _, v := range values {
		if len(v) >= 4 && strings.Contains(msg, string(v)) {
			msg = strings.ReplaceAll(msg, string(v), "***")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return errors.New(msg)
}

// RunDue rotates every secret due now that no node is working on, and
// reports how many it attempted. Several nodes may run it at once: the
// claim gives each secret to one of them.
func (m *Manager) RunDue(ctx context.Context) (int, error) {
	now := m.cfg.Now()
	due, err := m.cfg.Store.DueRotations(ctx, now, 100)
	if err != nil {
		return 0, fmt.Errorf("rotate: due rotations: %w", err)
	}
	n := 0
	for _, d := range due {
		if ctx.Err() != nil {
			break
		}
		// Claimed from now, not from the round's start: the attempts
		// before it took time, and a claim that ran out before its
		// attempt began let another node rotate the secret too.
		at := m.cfg.Now()
		r, err := m.cfg.Store.ClaimRotation(ctx, d.Name, m.cfg.Node, at, at.Add(m.claimFor()))
		if err != nil {
			continue // another node took it, or it was removed meanwhile
		}
		n++
		m.attempt(ctx, r, "schedule", "")
	}
	return n, nil
}

// Run checks the schedule every Interval (with jitter, so nodes started
// together spread out) until ctx ends, and keeps the Observer's failure
// counts in step with the store (another node's attempts included).
func (m *Manager) Run(ctx context.Context) {
	shown := map[string]bool{}
	for {
		j, _ := rand.Int(rand.Reader, big.NewInt(int64(m.cfg.Interval/2)+1))
		t := time.NewTimer(m.cfg.Interval/2 + time.Duration(j.Int64()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := m.RunDue(ctx); err != nil && ctx.Err() == nil {
			m.cfg.Logger.Warn("rotate: checking the schedule failed", "err", err)
		}
		if m.cfg.Observer != nil {
			if rs, err := m.cfg.Store.Rotations(ctx); err == nil {
				now := make(map[string]bool, len(rs))
				for _, r := range rs {
					m.cfg.Observer.Failing(r.Name, r.Failures)
					now[r.Name] = true
				}
				for n := range shown {
					if !now[n] {
						m.cfg.Observer.Failing(n, -1) // removed or deleted
					}
				}
				shown = now
			}
		}
	}
}
