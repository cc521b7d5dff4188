package authority

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Roles, weakest first. Each role may do all that the weaker ones may.
const (
	RoleAuditor  = "auditor"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// RoleRank orders roles; 0 is not a role.
func RoleRank(role string) int {
	switch role {
	case RoleAuditor:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// AdminStore keeps admin tokens as keyed hashes.
type AdminStore interface {
	CreateAdminTokenNoted(ctx context.Context, t store.AdminToken, n *store.Note) error
	AdminTokenByHash(ctx context.Context, hash [32]byte) (store.AdminToken, error)
	AdminTokensByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]store.AdminToken, error)
	ListAdminTokens(ctx context.Context) ([]store.AdminToken, error)
	RevokeAdminTokenNoted(ctx context.Context, name string, at time.Time, n *store.Note) error
	RevokeHeldAdminTokenNoted(ctx context.Context, name string, hash [32]byte, at time.Time, n *store.Note) error
	TouchAdminToken(ctx context.Context, name string, at time.Time) error
}

// Admin token lifetimes: DefaultAdminTTL when a creator names none,
// DefaultAdminMaxTTL the longest one unless the server config sets
// admin_token_max_ttl.
const (
	DefaultAdminTTL    = 90 * 24 * time.Hour
	DefaultAdminMaxTTL = 365 * 24 * time.Hour
	// adminTouchEvery is how stale an admin token's recorded last use may
	// get: a call records it only when the last record is older, so that
	// a busy token does not cost a write per call.
	adminTouchEvery = time.Minute
)

// Admins issues and checks admin tokens.
type Admins struct {
	st     AdminStore
	hasher *token.Hasher
	audit  Auditor
	now    func() time.Time
	maxTTL time.Duration
}

// NewAdmins returns the admin-token authority.
func NewAdmins(st AdminStore, hasher *token.Hasher, a Auditor, now func() time.Time) *Admins {
	if now == nil {
		now = time.Now
	}
	return &Admins{st: st, hasher: hasher, audit: a, now: now, maxTTL: DefaultAdminMaxTTL}
}

// LimitTTL sets the longest lifetime an admin token may be created with
// (admin_token_max_ttl); 0 keeps DefaultAdminMaxTTL. Call it before use.
func (a *Admins) LimitTTL(max time.Duration) {
	if max > 0 {
		a.maxTTL = max
	}
}

// ErrBadCredentials is any failure to authenticate: 401.
var ErrBadCredentials = errors.New("invalid admin token")

// ErrExpired is an admin token past its expiry: 401, saying so. It is an
// ErrBadCredentials.
var ErrExpired = fmt.Errorf("%w: expired", ErrBadCredentials)

// Authenticate returns the live admin token tok names.
func (a *Admins) Authenticate(ctx context.Context, tok string) (store.AdminToken, error) {
	if k, err := token.Parse(tok); err != nil || k != token.Admin {
		return store.AdminToken{}, ErrBadCredentials
	}
	h := a.hasher.Sum(tok)
	t, err := a.st.AdminTokenByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return store.AdminToken{}, ErrBadCredentials
	}
	if err != nil {
		return store.AdminToken{}, fmt.Errorf("authenticate admin: %w", err)
	}
	// The lookup was by hash; compare again in constant time so the answer
	// never depends on how much of a guess matched.
	if !token.Equal(t.Hash, h) {
		return store.AdminToken{}, ErrBadCredentials
	}
	now := a.now()
	if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) {
		return t, ErrExpired
	}
	if now.Sub(t.LastUsedAt) >= adminTouchEvery {
		// The last use is for people reading the list; a store that
		// cannot record it now must not refuse the call.
		if err := a.st.TouchAdminToken(ctx, t.Name, now.UTC()); err == nil {
			t.LastUsedAt = now.UTC()
		}
	}
	return t, nil
}

var adminName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// CredentialShaped reports whether s is, or holds, a mayfly token, a
// minted password or a session value: a name kept in rows and audit
// entries (an admin token's, a secret's) must never be one, as it is
// when a credential is passed where its name belongs.
func CredentialShaped(s string) bool {
	b := []byte(s)
	if len(token.Find(b)) > 0 || len(token.FindPasswords(b)) > 0 {
		return true
	}
	for i := strings.Index(s, SessionPrefix); i >= 0; {
		if i+SessionLen <= len(s) && LooksLikeSession(s[i:i+SessionLen]) {
			return true
		}
		j := strings.Index(s[i+1:], SessionPrefix)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// ReasonCreatorLowered is the reason of an admin token's admin.delete
// entry when its maker's role was lowered (Sessions.EndStronger).
const ReasonCreatorLowered = "creator's role lowered at sign-in"

// Create issues a new admin token that works for ttl (when 0,
// DefaultAdminTTL or the configured maximum if shorter; at most that
// maximum); the token is returned once, with
// its expiry. No human made it (CreateBy).
func (a *Admins) Create(ctx context.Context, name, role string, ttl time.Duration, by string, source netip.Addr) (string, time.Time, error) {
	return a.CreateBy(ctx, name, role, ttl, by, "", source)
}

// CreateBy is Create for a caller that acts for the human of the identity
// provider's subject creator (signed in, or with a token that human made;
// "" for none): the token is theirs, and ends when a sign-in lowers their
// role below its own (Sessions.EndStronger).
func (a *Admins) CreateBy(ctx context.Context, name, role string, ttl time.Duration, by, creator string, source netip.Addr) (string, time.Time, error) {
	if !adminName.MatchString(name) {
		return "", time.Time{}, refuse(400, "invalid_request", "name must match %s", adminName)
	}
	if CredentialShaped(name) {
		// The name is kept in rows and audit entries: never a credential.
		return "", time.Time{}, refuse(400, "invalid_request", "name must not be a token or session value")
	}
	if RoleRank(role) == 0 {
		return "", time.Time{}, refuse(400, "invalid_request", "role must be admin, operator or auditor")
	}
	if ttl == 0 {
		ttl = min(DefaultAdminTTL, a.maxTTL)
	}
	switch {
	case ttl < time.Second:
		return "", time.Time{}, refuse(400, "invalid_request", "ttl must be at least 1s")
	case ttl > a.maxTTL:
		return "", time.Time{}, refuse(400, "invalid_request", "ttl %s is longer than this server allows (admin_token_max_ttl %s)", ttl, a.maxTTL)
	}
	tok, err := token.New(token.Admin)
	if err != nil {
		return "", time.Time{}, err
	}
	now := a.now().UTC()
	expires := now.Add(ttl)
	ev := audit.Event{Type: audit.TypeAdminCreate, Admin: by, Role: role, Source: addrString(source), Status: 200, Detail: map[string]any{"name": name, "expires_at": expires.Format(time.RFC3339)}}
	since := a.audit.Size()
	note := noted(a.audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	err = a.st.CreateAdminTokenNoted(ctx, store.AdminToken{Name: name, Role: role, Hash: a.hasher.Sum(tok), CreatedAt: now, ExpiresAt: expires, CreatorSubject: creator}, note)
	if errors.Is(err, store.ErrExists) {
		return "", time.Time{}, refuse(409, "conflict", "an admin token named %q exists", name)
	}
	if err != nil {
		return "", time.Time{}, failed("admin token", err)
	}
	settle(ctx, a.audit, slog.New(slog.DiscardHandler), since, note)
	return tok, expires, nil
}

// Revoke revokes an admin token by name.
func (a *Admins) Revoke(ctx context.Context, name, by string, source netip.Addr) error {
	// No token can have a name Create refuses; PostgreSQL would fail on
	// one (NUL, invalid UTF-8) instead of finding nothing. The name is
	// not quoted back: it is often the token itself, passed by mistake,
	// and the answer lands on a terminal or in a CI log.
	if !adminName.MatchString(name) {
		return refuse(404, "not_found", "no live admin token by that name (pass the token's name, not the token)")
	}
	ev := audit.Event{Type: audit.TypeAdminDelete, Admin: by, Source: addrString(source), Status: 200, Detail: map[string]any{"name": name}}
	since := a.audit.Size()
	note := noted(a.audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	err := a.st.RevokeAdminTokenNoted(ctx, name, a.now().UTC(), note)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(404, "not_found", "no live admin token by that name (pass the token's name, not the token)")
	}
	if err != nil {
		return failed("admin token revocation", err)
	}
	settle(ctx, a.audit, slog.New(slog.DiscardHandler), since, note)
	return nil
}

// RevokeToken revokes the live admin token tok, for whoever presents it
// (an RFC 7009 revocation or a leak report): holding a token is enough to
// kill it. It reports whether this call revoked it; an unknown or already
// revoked token is not an error.
func (a *Admins) RevokeToken(ctx context.Context, tok string, source netip.Addr, reason string) (bool, error) {
	t, err := a.Authenticate(ctx, tok)
	if errors.Is(err, ErrBadCredentials) {
		return false, nil
	}
	if err != nil {
		return false, unavailable("revoke admin token", err)
	}
	return a.revokeFound(ctx, t, tok, source, reason)
}

// Holders returns, for each of toks, the live admin token it is (a zero
// AdminToken when none), looked up together: a few queries in all rather
// than one per token.
func (a *Admins) Holders(ctx context.Context, toks []string) ([]store.AdminToken, error) {
	out := make([]store.AdminToken, len(toks))
	hashes := make([][32]byte, len(toks))
	var ask [][32]byte
	for i, tok := range toks {
		if k, err := token.Parse(tok); err == nil && k == token.Admin {
			hashes[i] = a.hasher.Sum(tok)
			ask = append(ask, hashes[i])
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	found, err := a.st.AdminTokensByHashes(ctx, ask)
	if err != nil {
		return nil, fmt.Errorf("find admin tokens: %w", err)
	}
	for i := range toks {
		t, ok := found[hashes[i]]
		// Found by hash; compare again in constant time, as Authenticate does.
		if ok && token.Equal(t.Hash, hashes[i]) {
			out[i] = t
		}
	}
	return out, nil
}

// revokeFound revokes the admin token t (tok) and records it, in one
// transaction.
func (a *Admins) revokeFound(ctx context.Context, t store.AdminToken, tok string, source netip.Addr, reason string) (bool, error) {
	ev := audit.Event{Type: audit.TypeAdminDelete, Role: t.Role, Source: addrString(source), Status: 200, Reason: reason,
		Hint: token.Hint(tok), Detail: map[string]any{"name": t.Name}}
	since := a.audit.Size()
	note := noted(a.audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	// That very token: its name may have been revoked and reused since
	// it was found.
	err := a.st.RevokeHeldAdminTokenNoted(ctx, t.Name, t.Hash, a.now().UTC(), note)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // revoked meanwhile
	}
	if err != nil {
		return false, failed("admin token revocation", err)
	}
	settle(ctx, a.audit, slog.New(slog.DiscardHandler), since, note)
	return true, nil
}

// List returns admin tokens (names and roles, never tokens).
func (a *Admins) List(ctx context.Context) ([]store.AdminToken, error) {
	return a.st.ListAdminTokens(ctx)
}
