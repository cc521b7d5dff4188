// Package secret owns envelope encryption of everything sensitive the server
// keeps: stored upstream credentials and internal keys (such as the token
// HMAC key). Every secret version is sealed with its own random data key
// (AES-256-GCM), the data key is sealed with a key-encryption key from the
// keyring, and every keyring version is sealed with the master key, which
// never reaches the store. It also owns master-key versions (keyring
// rotation) and the background re-wrap that follows a rotation.
//
// It never returns a value to an API caller: List and Meta give metadata
// only, and Reveal exists for the gateway, which decrypts a credential in
// process for one request (the opened value is kept in memory beside its
// sealed record for at most Options.RecordCacheTTL). It never logs, wraps
// into an error or stores a value, a data key, a key-encryption key or the
// master key in the clear.
package secret

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// Store is the part of *store.DB the vault uses.
type Store interface {
	KeyVersions(ctx context.Context) ([]store.KeyVersion, error)
	AddKeyVersion(ctx context.Context, k store.KeyVersion) error
	AddKeyVersionNoted(ctx context.Context, k store.KeyVersion, n *store.Note) error
	DeleteKeyVersion(ctx context.Context, version int) error
	KeyVersionsInUse(ctx context.Context) (map[int]int64, error)
	NextSecretVersion(ctx context.Context, name string) (int, error)
	PutSecret(ctx context.Context, s store.Secret) error
	PutSecretKeeping(ctx context.Context, s store.Secret, keepUntil time.Time) error
	PutSecretRotating(ctx context.Context, s store.Secret, base int, keepUntil time.Time, rc *store.RotationChange, n *store.Note) error
	PendingSecret(ctx context.Context, name string) (store.Secret, error)
	PromoteSecret(ctx context.Context, name string, version, base int, at, keepUntil time.Time, n *store.Note) error
	GetSecretVersion(ctx context.Context, name string, version int, now time.Time) (store.Secret, error)
	RetireSecrets(ctx context.Context, now time.Time) (int64, error)
	GetSecret(ctx context.Context, name string) (store.Secret, error)
	ListSecrets(ctx context.Context) ([]store.SecretMeta, error)
	DeleteSecret(ctx context.Context, name string, at time.Time) error
	DeleteSecretNoted(ctx context.Context, name string, at time.Time, n *store.Note) error
	SecretsWrappedBelow(ctx context.Context, version, limit int) ([]store.Secret, error)
	RewrapSecret(ctx context.Context, name string, version, fromKEK, toKEK int, wrapped []byte) error
}

var _ Store = (*store.DB)(nil)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no live secret by that name. It also matches
	// store.ErrNotFound when the store said so.
	ErrNotFound = errors.New("secret: not found")
	// ErrInvalidName: the name breaks ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$.
	ErrInvalidName = errors.New("secret: invalid name")
	// ErrInvalidValue: the value is empty or larger than MaxValueSize.
	ErrInvalidValue = errors.New("secret: invalid value")
	// ErrWrongMasterKey: the master key does not unseal a keyring version.
	ErrWrongMasterKey = errors.New("secret: master key does not open the keyring")
	// ErrTampered: a stored record does not open: its bytes were changed,
	// copied from another record, or sealed under another key.
	ErrTampered = errors.New("secret: sealed record does not open (tampered, swapped or sealed under another key)")
	// ErrClosed: the vault was closed.
	ErrClosed = errors.New("secret: vault closed")
)

const (
	// MaxValueSize is the largest value Put accepts.
	MaxValueSize = 64 << 10
	// MaxNameLen is the longest secret name.
	MaxNameLen = 128
	// MaxRecordCacheTTL bounds Options.RecordCacheTTL.
	MaxRecordCacheTTL = time.Second

	systemPrefix     = "sys/"
	maxPutAttempts   = 1000
	maxCachedRecords = 10000
)

// maxStaleKeyringAttempts bounds how often one write reloads the keyring
// after sealing under a deleted version: more than one rotation finishing
// during a single write is not expected.
const maxStaleKeyringAttempts = 3

// Options tunes a Vault; the zero value is right for production.
type Options struct {
	// RecordCacheTTL is how long a sealed record read from the store, and
	// the value Reveal opened from that very record, may be reused by
	// Reveal. 0 means MaxRecordCacheTTL; negative turns the cache off; more
	// than MaxRecordCacheTTL is refused. On a cluster, another node's Put
	// or Delete is seen within this time; this node's own Put and Delete
	// are seen at once.
	RecordCacheTTL time.Duration
	// RewrapBatch is how many secrets one re-wrap step reads. 0 means 256.
	RewrapBatch int
	// RefreshInterval is how often the keyring is re-read, so a rotation
	// made by another node is used for new writes (and an unfinished
	// re-wrap is picked up). 0 means 10 s.
	RefreshInterval time.Duration
	// RetireGrace is how long after a rotation old keyring versions are
	// kept even once nothing uses them, so that nodes which have not seen
	// the rotation yet (see RefreshInterval) never write under a deleted
	// version. 0 means none on SQLite (one process) and 30 s otherwise;
	// negative means none.
	RetireGrace time.Duration
	// Logger receives background re-wrap progress and errors (never key
	// material or values). nil discards.
	Logger *slog.Logger
}

// Meta describes a stored secret; it never carries the value.
type Meta struct {
	Name       string    `json:"name"`
	Version    int       `json:"version"`
	KeyVersion int       `json:"key_version"`
	CreatedAt  time.Time `json:"created_at"`
}

// kek is one unsealed keyring version. Only the AEAD is kept; the raw key
// bytes are zeroed once it is built.
type kek struct {
	version   int
	aead      cipher.AEAD
	createdAt time.Time
}

// keyring is an immutable snapshot of the unsealed keyring.
type keyring struct {
	current int
	keys    map[int]*kek
}

// Vault seals and unseals secrets. It is safe for concurrent use.
type Vault struct {
	st     Store
	opts   Options
	log    *slog.Logger
	master cipher.AEAD

	ring   atomic.Pointer[keyring]
	ringMu sync.Mutex // serialises keyring reloads and rotations
	// putMu: every Put holds it shared from choosing its keyring version
	// until its row is durable; retiring old keyring versions holds it
	// exclusively, so no local Put lands under a version being deleted.
	putMu sync.RWMutex

	cache recordCache
	hints versionHints
	rw    rewrapState
	kick  chan struct{}

	closed    atomic.Bool
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Open returns a vault over st. It creates keyring version 1 when the
// keyring is empty, checks that masterKey opens every keyring version
// (ErrWrongMasterKey otherwise) and resumes any unfinished re-wrap in the
// background. Open keeps no reference to masterKey: the caller may zero it
// once Open returns.
func Open(ctx context.Context, st Store, masterKey []byte, opts Options) (*Vault, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("secret: master key is %d bytes, want %d", len(masterKey), KeySize)
	}
	if opts.RecordCacheTTL > MaxRecordCacheTTL {
		return nil, fmt.Errorf("secret: record cache TTL %v is above the %v limit", opts.RecordCacheTTL, MaxRecordCacheTTL)
	}
	if opts.RecordCacheTTL == 0 {
		opts.RecordCacheTTL = MaxRecordCacheTTL
	}
	if opts.RewrapBatch <= 0 {
		opts.RewrapBatch = 256
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = 10 * time.Second
	}
	if opts.RetireGrace == 0 {
		opts.RetireGrace = 30 * time.Second
		if b, ok := st.(interface{ Backend() string }); ok && b.Backend() == "sqlite" {
			opts.RetireGrace = -1
		}
	}
	master, err := newAEAD(masterKey)
	if err != nil {
		return nil, fmt.Errorf("secret: master key: %w", err)
	}
	v := &Vault{st: st, opts: opts, master: master, log: opts.Logger, kick: make(chan struct{}, 1)}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	v.cache.init(opts.RecordCacheTTL)
	v.hints.m = map[string]int{}
	v.rw.init()
	v.ring.Store(&keyring{keys: map[int]*kek{}})

	kvs, err := st.KeyVersions(ctx)
	if err != nil {
		return nil, fmt.Errorf("secret: open: %w", err)
	}
	if len(kvs) == 0 {
		// Several nodes may start on an empty store at once: one wins,
		// the others load the winner's version.
		if err := v.addVersion(ctx, 1, nil); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("secret: open: create keyring: %w", err)
		}
	}
	if err := v.reloadKeyring(ctx); err != nil {
		return nil, err
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.wg.Add(1)
	go v.run()
	// Resume whatever re-wrap an earlier process left unfinished (a cheap
	// check when there is none).
	v.requestRewrap()
	return v, nil
}

// Close stops background work (an unfinished re-wrap resumes at the next
// Open) and drops the unsealed keyring. It does not close the store.
func (v *Vault) Close() {
	v.closeOnce.Do(func() {
		v.closed.Store(true)
		if v.cancel != nil {
			v.cancel()
		}
		v.wg.Wait()
		v.ring.Store(&keyring{keys: map[int]*kek{}})
		v.cache.clearAll()
	})
}

func (v *Vault) alive() error {
	if v.closed.Load() {
		return ErrClosed
	}
	return nil
}

// ValidateName reports whether name may name a secret: 1 to 128
// characters, letters, digits, '.', '_' and '-', starting with a letter or
// digit. The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if !validName(name) {
		return fmt.Errorf("%w: %q: want 1-%d of A-Z a-z 0-9 . _ -, starting with a letter or digit", ErrInvalidName, truncate(name, MaxNameLen+8), MaxNameLen)
	}
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func notFound(name string, err error) error {
	return fmt.Errorf("%w: %q: %w", ErrNotFound, name, err)
}

// Put stores value as the next version of name and returns that version.
// Concurrent Puts of one name each get their own version (none is lost).
// The value is sealed before it leaves this call; Put does not keep it.
func (v *Vault) Put(ctx context.Context, name string, value []byte) (int, error) {
	return v.PutKeeping(ctx, name, value, time.Time{})
}

// PutKeeping is Put for a rotation: the version it replaces stays sealed
// and readable with RevealPrevious until keepUntil (zero: destroyed at
// once, as Put does), for requests that began with it.
func (v *Vault) PutKeeping(ctx context.Context, name string, value []byte, keepUntil time.Time) (int, error) {
	return v.put(ctx, name, value, putOpts{keepUntil: keepUntil})
}

// PutKeepingNoted is PutKeeping for a rotation: value was made from
// version base of name, and is refused (store.ErrSecretChanged, nothing
// written) when base is no longer the live version, so that a write or
// delete made meanwhile stands; n, the rotation's audit record, is
// written in the same store transaction as the version (store.Note); an
// error from n undoes the write.
func (v *Vault) PutKeepingNoted(ctx context.Context, name string, value []byte, base int, keepUntil time.Time, n *store.Note) (int, error) {
	return v.put(ctx, name, value, putOpts{base: base, keepUntil: keepUntil, n: n})
}

// PutNoted is Put for an admin: n, the write's audit record, is written
// in the same store transaction as the version, so that neither stands
// without the other (store.Note); an error from n undoes the write.
func (v *Vault) PutNoted(ctx context.Context, name string, value []byte, n *store.Note) (int, error) {
	return v.put(ctx, name, value, putOpts{n: n})
}

// PutRotating is PutNoted that also changes the secret's rotation (rc) in
// the same store transaction, for an admin's write that names both.
func (v *Vault) PutRotating(ctx context.Context, name string, value []byte, rc *store.RotationChange, n *store.Note) (int, error) {
	return v.put(ctx, name, value, putOpts{rc: rc, n: n})
}

// Stage stores value as the next version of name, pending: not in use
// (Reveal keeps returning the live version) until Promote makes it live.
// A postgres_password rotation stages its new value before the role's
// ALTER ROLE commits, so that a crash in between never leaves a password
// the role may not have in use, and the value is not lost if the ALTER
// ROLE did commit. A later Put destroys it; a later Stage replaces it.
// Like PutKeepingNoted, it is refused (store.ErrSecretChanged) when base,
// the live version value was made from, no longer is.
func (v *Vault) Stage(ctx context.Context, name string, value []byte, base int) (int, error) {
	return v.put(ctx, name, value, putOpts{base: base, pending: true})
}

// RevealPending returns name's pending value (Stage) and its version, or
// ErrNotFound when it has none. For a rotator only, like RevealPrevious.
func (v *Vault) RevealPending(ctx context.Context, name string) ([]byte, int, error) {
	if err := v.alive(); err != nil {
		return nil, 0, err
	}
	if err := ValidateName(name); err != nil {
		return nil, 0, err
	}
	rec, err := v.st.PendingSecret(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, notFound(name, err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("secret: read %s pending: %w", name, err)
	}
	val, err := v.openRecord(ctx, rec)
	if err != nil {
		return nil, 0, fmt.Errorf("secret: reveal %s v%d: %w", name, rec.Version, err)
	}
	return val, rec.Version, nil
}

// Promote makes name's pending version live, keeping the version it
// replaces until keepUntil (as PutKeeping), with n, its audit record, in
// the same store transaction. ErrNotFound when version is no longer
// pending (a later write replaced it); store.ErrSecretChanged when base,
// the live version it was made from, no longer is.
func (v *Vault) Promote(ctx context.Context, name string, version, base int, keepUntil time.Time, n *store.Note) error {
	if err := v.alive(); err != nil {
		return err
	}
	err := v.st.PromoteSecret(ctx, name, version, base, time.Now(), keepUntil, n)
	v.cache.invalidate(name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound(name, err)
	}
	if err != nil {
		return fmt.Errorf("secret: promote %s v%d: %w", name, version, err)
	}
	return nil
}

// putOpts are what a write carries besides the value: the live version
// it was made from (0: any), the grace period of the version it replaces,
// a change of the rotation, the audit record, and whether the version is
// pending (Stage).
type putOpts struct {
	base      int
	keepUntil time.Time
	rc        *store.RotationChange
	n         *store.Note
	pending   bool
}

func (v *Vault) put(ctx context.Context, name string, value []byte, o putOpts) (int, error) {
	if err := v.alive(); err != nil {
		return 0, err
	}
	if err := ValidateName(name); err != nil {
		return 0, err
	}
	if len(value) == 0 || len(value) > MaxValueSize {
		return 0, fmt.Errorf("%w: %d bytes, want 1 to %d", ErrInvalidValue, len(value), MaxValueSize)
	}
	// Optimistic: guess the next version from what this node last saw
	// (1 for a name it has not seen) and let the store's compare-and-set
	// refuse a wrong guess; only then read the real next version. This keeps
	// a store read off the common path.
	guess := v.hints.get(name) + 1
	for attempt := 1; ; attempt++ {
		err := v.putOnce(ctx, name, value, guess, o)
		if err == nil {
			v.hints.set(name, guess)
			return guess, nil
		}
		if errors.Is(err, store.ErrSecretChanged) {
			return 0, err // trying another version number changes nothing
		}
		if !errors.Is(err, store.ErrConflict) && !v.versionTaken(ctx, name, guess) {
			return 0, err
		}
		if attempt >= maxPutAttempts {
			return 0, fmt.Errorf("secret: put %s: still losing to concurrent writers after %d attempts: %w", name, attempt, err)
		}
		if attempt > 3 {
			// Many writers on one name: spread them out a little.
			var b [1]byte
			rand.Read(b[:])
			t := time.NewTimer(time.Duration(int(b[0])%min(attempt, 20)+1) * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, fmt.Errorf("secret: put %s: %w", name, ctx.Err())
			case <-t.C:
			}
		}
		if guess, err = v.st.NextSecretVersion(ctx, name); err != nil {
			return 0, fmt.Errorf("secret: put %s: %w", name, err)
		}
	}
}

// versionTaken reports whether, after a failed write, version of name now
// exists: another writer took it. On PostgreSQL a writer on another
// connection (another node) loses such a race with a unique-key error
// rather than store.ErrConflict; it is then a conflict like any other.
// (Were our own write durable despite its error, the retry adds one more
// version of the same value: harmless.)
func (v *Vault) versionTaken(ctx context.Context, name string, version int) bool {
	if ctx.Err() != nil {
		return false
	}
	next, err := v.st.NextSecretVersion(ctx, name)
	return err == nil && next > version
}

// putOnce seals value as version of name under the current keyring version
// and stores it; store.ErrConflict when version is not the next one.
func (v *Vault) putOnce(ctx context.Context, name string, value []byte, version int, o putOpts) error {
	for attempt := 1; ; attempt++ {
		err := v.putSealed(ctx, name, value, version, o)
		if !errors.Is(err, store.ErrKeyVersionGone) || attempt >= maxStaleKeyringAttempts {
			return err
		}
		// This node missed a master-key rotation (its keyring refreshes
		// failed for longer than RetireGrace) and sealed under a version
		// another node has since deleted; the store refused the row, which
		// nothing could ever open. Seal again under the keyring as it is.
		if rerr := v.reloadKeyring(ctx); rerr != nil {
			return fmt.Errorf("secret: put %s: %w (after: %w)", name, rerr, err)
		}
	}
}

// putSealed is one attempt of putOnce, under the keyring this node holds.
func (v *Vault) putSealed(ctx context.Context, name string, value []byte, version int, o putOpts) error {
	v.putMu.RLock()
	defer v.putMu.RUnlock()
	ring := v.ring.Load()
	k := ring.keys[ring.current]
	if k == nil {
		return fmt.Errorf("secret: put %s: %w", name, ErrClosed)
	}
	rec := sealRecord(k, name, version, value, time.Now())
	rec.Pending = o.pending
	if err := v.st.PutSecretRotating(ctx, rec, o.base, o.keepUntil, o.rc, o.n); err != nil {
		return fmt.Errorf("secret: put %s: %w", name, err)
	}
	v.cache.invalidate(name)
	return nil
}

// sealRecord seals value under a fresh data key and wraps that key with k.
func sealRecord(k *kek, name string, version int, value []byte, now time.Time) store.Secret {
	dek := randomKey()
	defer zero(dek)
	da, err := newAEAD(dek)
	if err != nil {
		panic("secret: AES-256-GCM with a 32-byte key failed: " + err.Error())
	}
	return store.Secret{
		Name:       name,
		Version:    version,
		KEKVersion: k.version,
		WrappedDEK: seal(k.aead, dek, dekAAD(name, version, k.version)),
		Ciphertext: seal(da, value, valueAAD(name, version)),
		CreatedAt:  now,
	}
}

// Reveal returns the live value of name and its version. It is for the
// gateway only, which injects the credential into one upstream request and
// then drops it: no API handler may call it or return what it returns. The
// caller owns the returned slice and should zero it after use.
func (v *Vault) Reveal(ctx context.Context, name string) ([]byte, int, error) {
	if err := v.alive(); err != nil {
		return nil, 0, err
	}
	// User names only: a system key (sys/…) is never handed to the gateway,
	// whatever a policy says.
	if err := ValidateName(name); err != nil {
		return nil, 0, err
	}
	return v.reveal(ctx, name, true)
}

// RevealPrevious returns the value of the version that name's live
// version replaced, while a rotation's grace period keeps it (ErrNotFound
// otherwise), and that version. Like Reveal, it is for the gateway (which
// masks both values in responses during the grace period) and for a
// rotator; never for an API caller.
func (v *Vault) RevealPrevious(ctx context.Context, name string) ([]byte, int, error) {
	if err := v.alive(); err != nil {
		return nil, 0, err
	}
	if err := ValidateName(name); err != nil {
		return nil, 0, err
	}
	live, _, err := v.record(ctx, name, true)
	if err != nil {
		return nil, 0, err
	}
	rec, err := v.st.GetSecretVersion(ctx, name, live.Version-1, time.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, notFound(name, err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("secret: read %s v%d: %w", name, live.Version-1, err)
	}
	val, err := v.openRecord(ctx, rec)
	if err != nil {
		return nil, 0, fmt.Errorf("secret: reveal %s v%d: %w", name, rec.Version, err)
	}
	return val, rec.Version, nil
}

func (v *Vault) reveal(ctx context.Context, name string, useCache bool) ([]byte, int, error) {
	if useCache {
		// Opening costs two AES-GCM opens and a key schedule per call:
		// the gateway reveals its credential on every request.
		if val, ver, ok := v.cache.value(name); ok {
			return val, ver, nil
		}
	}
	rec, cached, err := v.record(ctx, name, useCache)
	if err != nil {
		return nil, 0, err
	}
	val, err := v.openRecord(ctx, rec)
	if err != nil && cached {
		// The cached copy may predate a re-wrap whose old key is gone, or a
		// change on another node: read the store once more.
		v.cache.invalidate(name)
		if rec, _, err = v.record(ctx, name, false); err != nil {
			return nil, 0, err
		}
		val, err = v.openRecord(ctx, rec)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("secret: reveal %s v%d: %w", name, rec.Version, err)
	}
	if useCache {
		v.cache.keepValue(name, rec, val)
	}
	return val, rec.Version, nil
}

// record returns the sealed live record of name, from the cache when
// allowed and fresh; cached reports where it came from.
func (v *Vault) record(ctx context.Context, name string, useCache bool) (store.Secret, bool, error) {
	useCache = useCache && v.cache.ttl > 0
	var gen uint64
	if useCache {
		if rec, ok := v.cache.get(name); ok {
			return rec, true, nil
		}
		gen = v.cache.generation()
	}
	rec, err := v.st.GetSecret(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Secret{}, false, notFound(name, err)
	}
	if err != nil {
		return store.Secret{}, false, fmt.Errorf("secret: read %s: %w", name, err)
	}
	if useCache {
		v.cache.put(name, rec, gen)
	}
	v.hints.set(name, rec.Version)
	return rec, false, nil
}

// openRecord unwraps rec's data key and opens its value. The data key is
// zeroed before it returns. rec is not modified.
func (v *Vault) openRecord(ctx context.Context, rec store.Secret) ([]byte, error) {
	k, err := v.kek(ctx, rec.KEKVersion)
	if err != nil {
		return nil, err
	}
	return openRecordWith(k, rec)
}

func openRecordWith(k *kek, rec store.Secret) ([]byte, error) {
	dek, err := open(k.aead, rec.WrappedDEK, dekAAD(rec.Name, rec.Version, rec.KEKVersion))
	if err != nil {
		return nil, fmt.Errorf("%w: data key: %w", ErrTampered, err)
	}
	defer zero(dek)
	da, err := newAEAD(dek)
	if err != nil {
		return nil, fmt.Errorf("%w: data key: %w", ErrTampered, err)
	}
	val, err := open(da, rec.Ciphertext, valueAAD(rec.Name, rec.Version))
	if err != nil {
		return nil, fmt.Errorf("%w: value: %w", ErrTampered, err)
	}
	return val, nil
}

// List returns the metadata of every live secret, by name; never a value,
// never a system key.
func (v *Vault) List(ctx context.Context) ([]Meta, error) {
	if err := v.alive(); err != nil {
		return nil, err
	}
	ms, err := v.st.ListSecrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("secret: list: %w", err)
	}
	out := make([]Meta, 0, len(ms))
	for _, m := range ms {
		if strings.HasPrefix(m.Name, systemPrefix) {
			continue
		}
		out = append(out, Meta{Name: m.Name, Version: m.Version, KeyVersion: m.KEKVersion, CreatedAt: m.CreatedAt})
	}
	return out, nil
}

// Meta returns the metadata of the live version of name (ErrNotFound when
// there is none).
func (v *Vault) Meta(ctx context.Context, name string) (Meta, error) {
	if err := v.alive(); err != nil {
		return Meta{}, err
	}
	if err := ValidateName(name); err != nil {
		return Meta{}, err
	}
	rec, _, err := v.record(ctx, name, false)
	if err != nil {
		return Meta{}, err
	}
	return Meta{Name: rec.Name, Version: rec.Version, KeyVersion: rec.KEKVersion, CreatedAt: rec.CreatedAt}, nil
}

// Delete destroys the sealed bytes of every version of name (ErrNotFound
// when there is no live version). Its version numbers stay taken, so a
// later Put continues the sequence.
func (v *Vault) Delete(ctx context.Context, name string) error {
	return v.DeleteNoted(ctx, name, nil)
}

// DeleteNoted is Delete for an admin: n, the delete's audit record, is
// written in the same store transaction (store.Note); an error from n
// undoes the delete, and a delete that finds nothing writes no record.
func (v *Vault) DeleteNoted(ctx context.Context, name string, n *store.Note) error {
	if err := v.alive(); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	err := v.st.DeleteSecretNoted(ctx, name, time.Now(), n)
	v.cache.invalidate(name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound(name, err)
	}
	if err != nil {
		return fmt.Errorf("secret: delete %s: %w", name, err)
	}
	return nil
}

// SystemKey returns the internal key for purpose (for example
// "token-hmac"), size random bytes created on first use and stored sealed
// like any secret under the name "sys/"+purpose, which no user name can
// take. Nodes racing to create it all get the one value that won. The
// caller owns the returned slice.
func (v *Vault) SystemKey(ctx context.Context, purpose string, size int) ([]byte, error) {
	if err := v.alive(); err != nil {
		return nil, err
	}
	if !validName(purpose) {
		return nil, fmt.Errorf("secret: system key purpose: %w", ValidateName(purpose))
	}
	if size < 16 || size > 1024 {
		return nil, fmt.Errorf("secret: system key %s: size %d, want 16 to 1024 bytes", purpose, size)
	}
	name := systemPrefix + purpose
	for attempt := 0; attempt < 5; attempt++ {
		val, _, err := v.reveal(ctx, name, false)
		if err == nil {
			if len(val) != size {
				zero(val)
				return nil, fmt.Errorf("secret: system key %s holds %d bytes, want %d", purpose, len(val), size)
			}
			return val, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		key := make([]byte, size)
		rand.Read(key)
		err = v.putOnce(ctx, name, key, 1, putOpts{})
		if err == nil {
			return key, nil
		}
		zero(key)
		// Another node created it first: read the winner's. (A node on
		// another connection may lose with a driver error rather than
		// store.ErrConflict; re-reading is right either way, and if nothing
		// is there the error stands.)
		if !errors.Is(err, store.ErrConflict) {
			if val, _, rerr := v.reveal(ctx, name, false); rerr == nil && len(val) == size {
				return val, nil
			}
			return nil, fmt.Errorf("secret: system key %s: %w", purpose, err)
		}
	}
	return nil, fmt.Errorf("secret: system key %s: neither readable nor creatable (deleted?)", purpose)
}

// recordCache keeps sealed records for a short time, so the gateway need
// not read the store on every request, and beside each the value Reveal
// opened from it, so it need not decrypt on every request either. Never a
// data key. A value lives and dies with the very record it was opened
// from: whatever drops or replaces the record (a Put, a Delete, a re-wrap,
// key retirement, expiry) drops the value, which is zeroed then.
type recordCache struct {
	ttl time.Duration
	mu  sync.RWMutex
	gen uint64 // bumped by every invalidation; a fill that raced one is dropped
	m   map[string]cachedRecord
}

type cachedRecord struct {
	rec   store.Secret
	until time.Time
	val   []byte // rec's opened value once Reveal opened it; nil before
}

func (c *recordCache) init(ttl time.Duration) {
	c.ttl = ttl
	c.m = map[string]cachedRecord{}
}

func (c *recordCache) get(name string) (store.Secret, bool) {
	c.mu.RLock()
	e, ok := c.m[name]
	c.mu.RUnlock()
	if !ok || time.Now().After(e.until) {
		return store.Secret{}, false
	}
	return e.rec, true
}

// value returns a copy of name's cached opened value (the caller may zero
// it) and its version, while fresh.
func (c *recordCache) value(name string) ([]byte, int, bool) {
	if c.ttl <= 0 {
		return nil, 0, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[name]
	if !ok || e.val == nil || time.Now().After(e.until) {
		return nil, 0, false
	}
	return bytes.Clone(e.val), e.rec.Version, true
}

// keepValue keeps a copy of val, opened from rec, beside name's cached
// record, if that is still rec: a record replaced or dropped meanwhile
// gets no value.
func (c *recordCache) keepValue(name string, rec store.Secret, val []byte) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || e.val != nil || !sameRecord(e.rec, rec) {
		return
	}
	e.val = bytes.Clone(val)
	c.m[name] = e
}

func sameRecord(a, b store.Secret) bool {
	return a.Name == b.Name && a.Version == b.Version && a.KEKVersion == b.KEKVersion &&
		bytes.Equal(a.WrappedDEK, b.WrappedDEK) && bytes.Equal(a.Ciphertext, b.Ciphertext)
}

func (c *recordCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *recordCache) put(name string, rec store.Secret, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // a Put, Delete or re-wrap happened meanwhile: rec may be stale
	}
	if len(c.m) >= maxCachedRecords {
		c.dropAll()
	}
	zero(c.m[name].val)
	c.m[name] = cachedRecord{rec: rec, until: time.Now().Add(c.ttl)}
}

func (c *recordCache) invalidate(name string) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	c.gen++
	zero(c.m[name].val)
	delete(c.m, name)
	c.mu.Unlock()
}

func (c *recordCache) clearAll() {
	c.mu.Lock()
	c.gen++
	c.dropAll()
	c.mu.Unlock()
}

// dropAll empties the cache, zeroing its values; c.mu must be held.
func (c *recordCache) dropAll() {
	for _, e := range c.m {
		zero(e.val)
	}
	clear(c.m)
}

// versionHints remembers the newest version this node saw per name: only a
// guess for Put (the store checks it), never trusted for anything else.
type versionHints struct {
	mu sync.Mutex
	m  map[string]int
}

func (h *versionHints) get(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[name]
}

func (h *versionHints) set(name string, version int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) >= maxCachedRecords {
		clear(h.m)
	}
	h.m[name] = version
}
