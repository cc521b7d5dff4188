package secret

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// Status describes the keyring ("master-key versions") and re-wrap progress.
type Status struct {
	// Current is the newest keyring version: new secrets are wrapped by it.
	Current int `json:"current"`
	// Versions lists every keyring version still stored, oldest first.
	Versions []int `json:"versions"`
	// Pending counts live secrets still wrapped by an older version.
	Pending int64 `json:"pending"`
	// Rewrapping is true while this node has re-wrap work queued or running.
	Rewrapping bool `json:"rewrapping"`
	// LastError is the last background re-wrap error on this node, if the
	// last pass failed.
	LastError string `json:"last_error,omitempty"`
}

// addVersion creates keyring version version: a fresh KEK sealed by the
// master key. store.ErrExists when another node took that version.
func (v *Vault) addVersion(ctx context.Context, version int, n *store.Note) error {
	key := randomKey()
	defer zero(key)
	return v.st.AddKeyVersionNoted(ctx, store.KeyVersion{
		Version:   version,
		Sealed:    seal(v.master, key, keyringAAD(version)),
		CreatedAt: time.Now(),
	}, n)
}

// unsealKEK opens one stored keyring version.
func (v *Vault) unsealKEK(kv store.KeyVersion) (*kek, error) {
	key, err := open(v.master, kv.Sealed, keyringAAD(kv.Version))
	if err != nil {
		return nil, fmt.Errorf("%w (keyring version %d)", ErrWrongMasterKey, kv.Version)
	}
	defer zero(key)
	a, err := newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("%w (keyring version %d: %v)", ErrWrongMasterKey, kv.Version, err)
	}
	return &kek{version: kv.Version, aead: a, createdAt: kv.CreatedAt}, nil
}

// SealedBy reports whether masterKey opens every keyring version in kvs:
// whether they are that master key's keyring (a failed init erases the
// keyring it made, never another's).
func SealedBy(masterKey []byte, kvs []store.KeyVersion) bool {
	if len(kvs) == 0 {
		return false
	}
	master, err := newAEAD(masterKey)
	if err != nil {
		return false
	}
	for _, kv := range kvs {
		key, err := open(master, kv.Sealed, keyringAAD(kv.Version))
		if err != nil {
			return false
		}
		zero(key)
	}
	return true
}

// reloadKeyring reads the keyring and replaces the in-memory snapshot:
// versions already unsealed are kept, new ones are unsealed, deleted ones
// are dropped.
func (v *Vault) reloadKeyring(ctx context.Context) error {
	v.ringMu.Lock()
	defer v.ringMu.Unlock()
	return v.reloadKeyringLocked(ctx)
}

func (v *Vault) reloadKeyringLocked(ctx context.Context) error {
	kvs, err := v.st.KeyVersions(ctx)
	if err != nil {
		return fmt.Errorf("secret: read keyring: %w", err)
	}
	if len(kvs) == 0 {
		return errors.New("secret: the keyring is empty")
	}
	old := v.ring.Load()
	next := &keyring{keys: make(map[int]*kek, len(kvs))}
	for _, kv := range kvs {
		k := old.keys[kv.Version]
		if k == nil {
			if k, err = v.unsealKEK(kv); err != nil {
				return err
			}
		}
		next.keys[kv.Version] = k
		next.current = max(next.current, kv.Version)
	}
	if v.closed.Load() {
		return ErrClosed
	}
	v.ring.Store(next)
	return nil
}

// kek returns keyring version version, re-reading the keyring once when
// this node does not know it (another node rotated).
func (v *Vault) kek(ctx context.Context, version int) (*kek, error) {
	if k := v.ring.Load().keys[version]; k != nil {
		return k, nil
	}
	v.ringMu.Lock()
	defer v.ringMu.Unlock()
	if k := v.ring.Load().keys[version]; k != nil {
		return k, nil
	}
	if err := v.reloadKeyringLocked(ctx); err != nil {
		return nil, err
	}
	if k := v.ring.Load().keys[version]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: keyring version %d does not exist", ErrTampered, version)
}

// RotateMasterKey starts a new master-key version: it adds keyring version
// N+1 (when another node did so at the same moment, it uses that one) and
// starts re-wrapping every secret's data key under it in the background.
// It returns the new version at once; WaitRewrap, RewrapDone and Status
// follow the re-wrap. Old versions are deleted once nothing uses them.
func (v *Vault) RotateMasterKey(ctx context.Context) (int, error) {
	v2, _, err := v.RotateMasterKeyNoted(ctx, nil)
	return v2, err
}

// RotateMasterKeyNoted is RotateMasterKey for an admin: n, the rotation's
// audit record, is written in the same store transaction as the new
// keyring version (store.Note); an error from n undoes the rotation.
// rotated is false when another node added that version first: this call
// changed nothing and wrote no record (the other node's rotation has its
// own).
func (v *Vault) RotateMasterKeyNoted(ctx context.Context, n *store.Note) (version int, rotated bool, err error) {
	if err := v.alive(); err != nil {
		return 0, false, err
	}
	v.ringMu.Lock()
	err = v.reloadKeyringLocked(ctx)
	if err == nil {
		next := v.ring.Load().current + 1
		err = v.addVersion(ctx, next, n)
		rotated = err == nil
		if errors.Is(err, store.ErrExists) {
			err = nil // another node rotated first: use its version
		}
		if err == nil {
			err = v.reloadKeyringLocked(ctx)
		}
	}
	cur := v.ring.Load().current
	v.ringMu.Unlock()
	if err != nil {
		// A failure after the version was added (the reload) leaves the
		// rotation and its record stored: say so to the caller.
		return 0, rotated, fmt.Errorf("secret: rotate master key: %w", err)
	}
	v.log.Info("secret: new master-key version, re-wrapping in the background", "version", cur)
	v.requestRewrap()
	return cur, rotated, nil
}

// Status reports the keyring versions and how many secrets still wait for
// re-wrapping.
func (v *Vault) Status(ctx context.Context) (Status, error) {
	if err := v.alive(); err != nil {
		return Status{}, err
	}
	kvs, err := v.st.KeyVersions(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("secret: status: %w", err)
	}
	use, err := v.st.KeyVersionsInUse(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("secret: status: %w", err)
	}
	var s Status
	for _, kv := range kvs {
		s.Versions = append(s.Versions, kv.Version)
		s.Current = max(s.Current, kv.Version)
	}
	slices.Sort(s.Versions)
	for ver, n := range use {
		if ver < s.Current {
			s.Pending += n
		}
	}
	s.Rewrapping, s.LastError = v.rw.state()
	return s, nil
}

// RewrapDone returns a channel closed once every re-wrap requested so far
// (by Open, RotateMasterKey or a keyring refresh) has finished, well or
// not (see WaitRewrap), or the vault is closed.
func (v *Vault) RewrapDone() <-chan struct{} { return v.rw.doneCh() }

// WaitRewrap waits until every re-wrap requested so far has finished and
// returns its error: nil once every secret is wrapped by the newest version
// and old versions are deleted. ErrClosed if the vault closes first.
func (v *Vault) WaitRewrap(ctx context.Context) error {
	select {
	case <-v.rw.doneCh():
		if v.closed.Load() {
			return ErrClosed
		}
		return v.rw.lastErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rewrapState tracks requested and finished re-wrap passes.
type rewrapState struct {
	mu      sync.Mutex
	want    uint64
	done    uint64
	running bool
	ch      chan struct{} // closed when done == want
	err     error
}

func (s *rewrapState) init() {
	s.ch = make(chan struct{})
	close(s.ch)
}

func (s *rewrapState) request() {
	s.mu.Lock()
	if s.done == s.want {
		s.ch = make(chan struct{})
	}
	s.want++
	s.mu.Unlock()
}

func (s *rewrapState) begin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = true
	return s.want
}

func (s *rewrapState) finish(g uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = false
	s.err = err
	pending := s.done < s.want
	s.done = max(s.done, g)
	if pending && s.done == s.want {
		close(s.ch)
	}
}

// abandon marks all requested work finished (the vault is closing).
func (s *rewrapState) abandon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = false
	if s.done < s.want {
		s.done = s.want
		s.err = ErrClosed
		close(s.ch)
	}
}

func (s *rewrapState) doneCh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *rewrapState) lastErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *rewrapState) state() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if s.err != nil {
		msg = s.err.Error()
	}
	return s.running || s.done < s.want, msg
}

func (v *Vault) requestRewrap() {
	v.rw.request()
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// run is the background worker: re-wrap passes on request, retries after
// failures, and periodic keyring refreshes.
func (v *Vault) run() {
	defer v.wg.Done()
	defer v.rw.abandon()
	tick := time.NewTicker(v.opts.RefreshInterval)
	defer tick.Stop()
	var retry <-chan time.Time
	backoff := time.Second
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-tick.C:
			// Versions whose rotation grace period ended lose their
			// sealed bytes (they are already unreadable past it).
			if _, err := v.st.RetireSecrets(v.ctx, time.Now()); err != nil && v.ctx.Err() == nil {
				v.log.Warn("secret: retiring replaced versions failed", "err", err)
			}
			if err := v.reloadKeyring(v.ctx); err != nil {
				if v.ctx.Err() == nil {
					v.log.Warn("secret: keyring refresh failed", "err", err)
				}
				continue
			}
			// More than one version means a rotation whose re-wrap or
			// clean-up is unfinished (perhaps by a node that died).
			if len(v.ring.Load().keys) > 1 && retry == nil {
				v.requestRewrap()
			}
			continue
		case <-v.kick:
		case <-retry:
		}
		retry = nil
		g := v.rw.begin()
		err := v.rewrapPass(v.ctx)
		if v.ctx.Err() != nil {
			return
		}
		v.rw.finish(g, err)
		if err != nil {
			v.log.Warn("secret: re-wrap failed, will retry", "err", err, "in", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, 30*time.Second)
		} else {
			backoff = time.Second
		}
	}
}

// rewrapPass moves every live secret to the newest keyring version, then
// deletes the versions nothing uses any more. It is idempotent and safe to
// run on several nodes at once (every row update is compare-and-swap).
func (v *Vault) rewrapPass(ctx context.Context) error {
	if err := v.reloadKeyring(ctx); err != nil {
		return err
	}
	for {
		cur := v.ring.Load().current
		n, err := v.rewrapTo(ctx, cur)
		if n > 0 {
			v.log.Info("secret: re-wrapped secrets", "count", n, "version", cur)
		}
		if err != nil {
			return err
		}
		retired, err := v.retire(ctx, cur)
		if err != nil {
			return err
		}
		if !retired {
			continue // a secret landed under an old version meanwhile
		}
		if err := v.reloadKeyring(ctx); err != nil {
			return err
		}
		if v.ring.Load().current == cur {
			return nil
		}
		// Another rotation happened meanwhile: go on to the newer version.
	}
}

// rewrapTo re-wraps every secret below version cur; it returns how many it
// moved. Rows whose data key does not open are skipped and reported (their
// keyring version is then kept).
func (v *Vault) rewrapTo(ctx context.Context, cur int) (int, error) {
	type rowID struct {
		name         string
		version, kek int
	}
	broken := map[rowID]error{}
	var firstBad error
	moved := 0
	for {
		rows, err := v.st.SecretsWrappedBelow(ctx, cur, v.opts.RewrapBatch+len(broken))
		if err != nil {
			return moved, err
		}
		progress := false
		for _, r := range rows {
			id := rowID{r.Name, r.Version, r.KEKVersion}
			if _, bad := broken[id]; bad {
				continue
			}
			err := v.rewrapOne(ctx, r, cur)
			switch {
			case err == nil:
				moved++
				progress = true
			case errors.Is(err, store.ErrConflict):
				progress = true // changed meanwhile (re-wrapped elsewhere, replaced, deleted)
			case ctx.Err() != nil:
				return moved, ctx.Err()
			case errors.Is(err, ErrTampered):
				broken[id] = err
				if firstBad == nil {
					firstBad = fmt.Errorf("%s v%d: %w", r.Name, r.Version, err)
				}
			default:
				return moved, err
			}
		}
		if !progress {
			break
		}
	}
	if len(broken) > 0 {
		return moved, fmt.Errorf("secret: %d secret versions cannot be re-wrapped (their keyring versions are kept); first: %w", len(broken), firstBad)
	}
	return moved, nil
}

// rewrapOne moves one row's data key from its keyring version to cur.
func (v *Vault) rewrapOne(ctx context.Context, r store.Secret, cur int) error {
	from, err := v.kek(ctx, r.KEKVersion)
	if err != nil {
		return err
	}
	to, err := v.kek(ctx, cur)
	if err != nil {
		return err
	}
	dek, err := open(from.aead, r.WrappedDEK, dekAAD(r.Name, r.Version, r.KEKVersion))
	if err != nil {
		return fmt.Errorf("%w: data key: %w", ErrTampered, err)
	}
	wrapped := seal(to.aead, dek, dekAAD(r.Name, r.Version, cur))
	zero(dek)
	return v.st.RewrapSecret(ctx, r.Name, r.Version, r.KEKVersion, cur, wrapped)
}

// retire deletes keyring versions older than cur once no live secret uses
// them and RetireGrace has passed since cur was created. It reports false
// when a secret under an old version turned up (re-wrap again).
func (v *Vault) retire(ctx context.Context, cur int) (bool, error) {
	kvs, err := v.st.KeyVersions(ctx)
	if err != nil {
		return false, fmt.Errorf("secret: retire: %w", err)
	}
	var old []int
	var created time.Time
	for _, kv := range kvs {
		if kv.Version < cur {
			old = append(old, kv.Version)
		}
		if kv.Version == cur {
			created = kv.CreatedAt
		}
	}
	if len(old) == 0 {
		return true, nil
	}
	if v.opts.RetireGrace > 0 {
		if d := time.Until(created.Add(v.opts.RetireGrace)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return false, ctx.Err()
			case <-t.C:
			}
		}
	}
	// No local Put may choose a keyring version while old ones go.
	v.putMu.Lock()
	defer v.putMu.Unlock()
	rows, err := v.st.SecretsWrappedBelow(ctx, cur, 1)
	if err != nil {
		return false, fmt.Errorf("secret: retire: %w", err)
	}
	if len(rows) > 0 {
		return false, nil
	}
	for _, ver := range old {
		if err := v.st.DeleteKeyVersion(ctx, ver); errors.Is(err, store.ErrConflict) {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("secret: retire: %w", err)
		}
		v.log.Info("secret: deleted old master-key version", "version", ver)
	}
	// Cached records may point at a deleted version.
	v.cache.clearAll()
	return true, nil
}
