package authority

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Audit entry types of human sign-in (admin_oidc).
const (
	// TypeSignIn is a sign-in: granted (status 200, a session made) or
	// refused (4xx, 503) with the reason.
	TypeSignIn = "admin.signin"
	// TypeSignOut is a session ended by its holder.
	TypeSignOut = "admin.signout"
	// TypeSessionRevoke is a session revoked by an admin.
	TypeSessionRevoke = "admin.session.revoke"
)

// Why a sign-in or a session was refused, as its entry's reason says.
const (
	RefusedState        = "unknown, used or expired state"
	RefusedBinding      = "state from another browser"
	RefusedCode         = "authorization code refused by the identity provider"
	RefusedIDToken      = "ID token invalid"
	RefusedNonce        = "nonce mismatch"
	RefusedUnmapped     = "user maps to no role"
	RefusedIdPError     = "identity provider returned an error"
	RefusedIssuer       = "callback from another issuer"
	RefusedIdPDown      = "identity provider unreachable"
	RefusedCLICode      = "unknown, used or expired CLI code"
	RefusedCLIVerifier  = "CLI code verifier mismatch"
	RefusedDevice       = "device authorization refused"
	DeniedSessionBad    = "unknown or revoked session"
	DeniedSessionExpiry = "session expired"
	DeniedCSRFMissing   = "CSRF token missing"
	DeniedCSRFWrong     = "CSRF token from another session"
	DeniedCrossSite     = "cross-site request"
)

// Session values: "mfys_" and 43 base64url characters (32 random bytes).
const (
	SessionPrefix = token.SessionPrefix
	SessionLen    = token.SessionLen
	// DefaultSessionTTL is admin_session_ttl's default.
	DefaultSessionTTL = 8 * time.Hour
	// DefaultSessionIdle is admin_session_idle's default: how long a
	// session may go unused before it ends.
	DefaultSessionIdle = time.Hour
	// LoginTTL bounds a sign-in under way: from /ui/login to its callback,
	// or from the callback to the CLI's exchange of its code.
	LoginTTL = 10 * time.Minute
)

// Via says how a session was signed in.
const (
	ViaBrowser = "browser"
	ViaCLI     = "cli"
)

// Session is a stored session (never its value), for the API.
type Session = store.AdminSession

// ErrNoLogin is a sign-in step that is unknown, already taken or expired.
var ErrNoLogin = errors.New("no such sign-in under way")

// SessionStore keeps sessions and sign-ins under way by keyed hash.
type SessionStore interface {
	CreateAdminSessionNoted(ctx context.Context, s store.AdminSession, n *store.Note) error
	AdminSessionByHash(ctx context.Context, hash [32]byte) (store.AdminSession, error)
	ListAdminSessions(ctx context.Context, now time.Time) ([]store.AdminSession, error)
	TouchAdminSession(ctx context.Context, id string, at time.Time) error
	RevokeAdminSessionNoted(ctx context.Context, id string, at time.Time, n *store.Note) error
	EndAdminSessionsNoted(ctx context.Context, subject string, roles []string, live store.SessionsLive, n *store.Note) ([]store.AdminSession, []store.AdminToken, error)
	AdminSessionsByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]store.AdminSession, error)
	PutAdminLogin(ctx context.Context, key [32]byte, kind string, data []byte, expires time.Time) error
	TakeAdminLogin(ctx context.Context, key [32]byte, kind string, now time.Time) ([]byte, error)
}

// Sessions issues, checks and ends the sessions of humans signed in
// through the identity provider. A session acts with its mapped role like
// an admin token of that role.
type Sessions struct {
	st     SessionStore
	hasher *token.Hasher
	audit  Auditor
	now    func() time.Time
	ttl    time.Duration
	idle   time.Duration
}

// NewSessions returns the session authority; ttl 0 is DefaultSessionTTL.
func NewSessions(st SessionStore, hasher *token.Hasher, a Auditor, now func() time.Time, ttl time.Duration) *Sessions {
	if now == nil {
		now = time.Now
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	return &Sessions{st: st, hasher: hasher, audit: a, now: now, ttl: ttl, idle: DefaultSessionIdle}
}

// LimitIdle sets how long a session may go unused before it ends
// (admin_session_idle); 0 keeps DefaultSessionIdle. Call it before use.
func (s *Sessions) LimitIdle(idle time.Duration) {
	if idle > 0 {
		s.idle = idle
	}
}

// TTL is how long a session lasts.
func (s *Sessions) TTL() time.Duration { return s.ttl }

// SignedIn is who the identity provider says signed in, and the role their
// claim maps to.
type SignedIn struct {
	Name    string // the mapped claim's value, or email, or sub
	Subject string
	Issuer  string
	Role    string
}

// LooksLikeSession tells a session value's shape (no store trip): the
// right prefix, length and alphabet.
func LooksLikeSession(v string) bool {
	if len(v) != SessionLen || !strings.HasPrefix(v, SessionPrefix) {
		return false
	}
	for i := len(SessionPrefix); i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// RandomString returns n random bytes, base64url without padding.
func RandomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("randomness: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Create starts a session for who, recorded in the same transaction as its
// admin.signin entry. It returns the session value, given once.
func (s *Sessions) Create(ctx context.Context, who SignedIn, via string, source netip.Addr) (string, store.AdminSession, error) {
	if RoleRank(who.Role) == 0 {
		return "", store.AdminSession{}, fmt.Errorf("session for %q: role %q is not a role", who.Name, who.Role)
	}
	body, err := RandomString(32)
	if err != nil {
		return "", store.AdminSession{}, err
	}
	value := SessionPrefix + body
	idb := make([]byte, 8)
	if _, err := rand.Read(idb); err != nil {
		return "", store.AdminSession{}, err
	}
	now := s.now().UTC()
	row := store.AdminSession{ID: "ses_" + hex.EncodeToString(idb), Hash: s.hasher.Sum(value), Name: who.Name, Subject: who.Subject,
		Role: who.Role, Via: via, Source: addrString(source), CreatedAt: now, ExpiresAt: now.Add(s.ttl)}
	ev := audit.Event{Type: TypeSignIn, Admin: who.Name, Role: who.Role, Subject: who.Subject, Issuer: who.Issuer, Source: addrString(source),
		Status: 200, Detail: map[string]any{"session": row.ID, "via": via, "expires_at": row.ExpiresAt.Format(time.RFC3339)}}
	since := s.audit.Size()
	note := noted(s.audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	if err := s.st.CreateAdminSessionNoted(ctx, row, note); err != nil {
		return "", store.AdminSession{}, failed("admin session", err)
	}
	settle(ctx, s.audit, slog.New(slog.DiscardHandler), since, note)
	return value, row, nil
}

// Authenticate returns the live session value names: ErrBadCredentials
// when it is unknown or revoked, ErrExpired (with the session) when it
// has expired.
func (s *Sessions) Authenticate(ctx context.Context, value string) (store.AdminSession, error) {
	if !LooksLikeSession(value) {
		return store.AdminSession{}, ErrBadCredentials
	}
	h := s.hasher.Sum(value)
	row, err := s.st.AdminSessionByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return store.AdminSession{}, ErrBadCredentials
	}
	if err != nil {
		return store.AdminSession{}, fmt.Errorf("authenticate session: %w", err)
	}
	if !token.Equal(row.Hash, h) {
		return store.AdminSession{}, ErrBadCredentials
	}
	now := s.now()
	s.cap(&row)
	if !now.Before(row.ExpiresAt) {
		return row, ErrExpired
	}
	if now.Sub(row.LastUsedAt) >= adminTouchEvery {
		if err := s.st.TouchAdminSession(ctx, row.ID, now.UTC()); err == nil {
			row.LastUsedAt = now.UTC()
		}
	}
	return row, nil
}

// Holders returns, for each of values, the live session it is (a zero
// AdminSession when none: unknown, revoked or expired, admin_session_ttl
// and admin_session_idle counted as Authenticate counts them), looked up
// together as a leak report's are: a few queries in all rather than one
// per value.
func (s *Sessions) Holders(ctx context.Context, values []string) ([]store.AdminSession, error) {
	out := make([]store.AdminSession, len(values))
	hashes := make([][32]byte, len(values))
	var ask [][32]byte
	for i, v := range values {
		if LooksLikeSession(v) {
			hashes[i] = s.hasher.Sum(v)
			ask = append(ask, hashes[i])
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	found, err := s.st.AdminSessionsByHashes(ctx, ask)
	if err != nil {
		return nil, fmt.Errorf("find admin sessions: %w", err)
	}
	now := s.now()
	for i := range values {
		row, ok := found[hashes[i]]
		// Found by hash; compared again in constant time, as Authenticate does.
		if !ok || !token.Equal(row.Hash, hashes[i]) {
			continue
		}
		// One already ended is no live session a report could revoke.
		if s.cap(&row); now.Before(row.ExpiresAt) {
			out[i] = row
		}
	}
	return out, nil
}

// RevokeHeld ends the live session value names, for whoever presents it
// (an RFC 7009 revocation): holding a session is enough to end it. It
// reports whether this call ended it; an unknown or already ended session
// is not an error.
func (s *Sessions) RevokeHeld(ctx context.Context, value string, source netip.Addr, reason string) (bool, error) {
	rows, err := s.Holders(ctx, []string{value})
	if err != nil {
		return false, unavailable("revoke admin session", err)
	}
	row := rows[0]
	if row.ID == "" {
		return false, nil
	}
	ev := audit.Event{Type: TypeSessionRevoke, Role: row.Role, Source: addrString(source), Status: 200, Reason: reason,
		Detail: map[string]any{"session": row.ID, "via": row.Via}}
	err = s.revoke(ctx, row.ID, ev)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // ended meanwhile
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// CSRF is the CSRF token of the session value: derived under the server's
// key, so it needs no storage, differs for every session and tells nothing
// of the value.
func (s *Sessions) CSRF(value string) string {
	h := s.hasher.Sum("csrf\x00" + value)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// CheckCSRF compares a presented CSRF token with the session's, in
// constant time.
func (s *Sessions) CheckCSRF(value, presented string) bool {
	return hmac.Equal([]byte(s.CSRF(value)), []byte(presented))
}

// Derive returns a value derived from secret under the server's key for
// purpose (a PKCE verifier or a nonce from a sign-in's state), so that a
// sign-in under way keeps neither in a row.
func (s *Sessions) Derive(purpose, secret string) string {
	h := s.hasher.Sum(purpose + "\x00" + secret)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// SignOut ends the session value names, for its holder.
func (s *Sessions) SignOut(ctx context.Context, row store.AdminSession, source netip.Addr) error {
	ev := audit.Event{Type: TypeSignOut, Admin: row.Name, Role: row.Role, Subject: row.Subject, Source: addrString(source), Status: 200,
		Detail: map[string]any{"session": row.ID, "via": row.Via}}
	err := s.revoke(ctx, row.ID, ev)
	if errors.Is(err, store.ErrNotFound) {
		return nil // revoked or expired meanwhile: signed out all the same
	}
	return err
}

// ValidSessionID reports whether id has the form of the ids Create gives
// sessions: "ses_" and 16 lowercase hex digits.
func ValidSessionID(id string) bool {
	body, ok := strings.CutPrefix(id, "ses_")
	if !ok || len(body) != 16 {
		return false
	}
	for i := 0; i < len(body); i++ {
		if c := body[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Revoke ends session id for an admin (by).
func (s *Sessions) Revoke(ctx context.Context, id, by string, source netip.Addr) error {
	// Only an id of Create's form is quoted back or looked up: anything
	// else is often the session's value (or a token) passed by mistake.
	if !ValidSessionID(id) {
		return refuse(404, "not_found", "no live session by that id (pass the session's id, ses_ and 16 hex digits, not its value)")
	}
	ev := audit.Event{Type: TypeSessionRevoke, Admin: by, Source: addrString(source), Status: 200, Detail: map[string]any{"session": id}}
	err := s.revoke(ctx, id, ev)
	if errors.Is(err, store.ErrNotFound) {
		return refuse(404, "not_found", "no live session %q", id)
	}
	return err
}

func (s *Sessions) revoke(ctx context.Context, id string, ev audit.Event) error {
	since := s.audit.Size()
	note := noted(s.audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	err := s.st.RevokeAdminSessionNoted(ctx, id, s.now().UTC(), note)
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil {
		return failed("admin session revocation", err)
	}
	settle(ctx, s.audit, slog.New(slog.DiscardHandler), since, note)
	return nil
}

// EndStronger ends subject's live sessions of a role stronger than role
// ("": every one), for a sign-in where the provider now maps them so:
// someone removed from a group (or moved to a weaker one) who signs in
// again loses what the earlier sign-in gave them, instead of keeping it
// until it expires. The admin tokens of such a role that subject made
// (Admins.CreateBy) end with them: a token made while an admin must not
// keep the role its maker lost. Each is audited (admin.session.revoke,
// reason "role lowered at sign-in"; admin.token.delete, reason "creator's role
// lowered at sign-in"). It returns how many sessions it ended: every one,
// in one store transaction, however many sessions there are.
func (s *Sessions) EndStronger(ctx context.Context, subject, role string, source netip.Addr) (int, error) {
	if subject == "" {
		return 0, nil
	}
	var stronger []string
	for _, r := range []string{RoleAuditor, RoleOperator, RoleAdmin} {
		if RoleRank(r) > RoleRank(role) {
			stronger = append(stronger, r)
		}
	}
	roleNow := role
	if roleNow == "" {
		roleNow = "none"
	}
	now := s.now().UTC()
	// Ended ones (revoked, expired, past admin_session_ttl or idle, as
	// cap counts them) are left be.
	live := store.SessionsLive{At: now, MadeAfter: now.Add(-s.ttl), UsedAfter: now.Add(-s.idle)}
	since := s.audit.Size()
	note := noted(s.audit, func(c store.Changes) []audit.Event {
		evs := make([]audit.Event, 0, len(c.EndedSessions))
		for _, r := range c.EndedSessions {
			evs = append(evs, audit.Event{Type: TypeSessionRevoke, Admin: r.Name, Role: r.Role, Subject: r.Subject, Source: addrString(source), Status: 200,
				Reason: "role lowered at sign-in", Detail: map[string]any{"session": r.ID, "via": r.Via, "role_now": roleNow}})
		}
		for _, t := range c.EndedAdmins {
			evs = append(evs, audit.Event{Type: audit.TypeAdminDelete, Role: t.Role, Subject: t.CreatorSubject, Source: addrString(source), Status: 200,
				Reason: ReasonCreatorLowered, Detail: map[string]any{"name": t.Name, "role_now": roleNow}})
		}
		return evs
	})
	ended, admins, err := s.st.EndAdminSessionsNoted(ctx, subject, stronger, live, note)
	if err != nil {
		return 0, failed("admin session revocation", err)
	}
	if len(ended) > 0 || len(admins) > 0 {
		settle(ctx, s.audit, slog.New(slog.DiscardHandler), since, note)
	}
	return len(ended), nil
}

// List returns the sessions not yet expired, live and revoked.
func (s *Sessions) List(ctx context.Context) ([]store.AdminSession, error) {
	now := s.now()
	rows, err := s.st.ListAdminSessions(ctx, now)
	if err != nil {
		return nil, err
	}
	out := rows[:0]
	for _, r := range rows {
		if s.cap(&r); now.Before(r.ExpiresAt) {
			out = append(out, r)
		}
	}
	return out, nil
}

// cap ends a session made under a longer admin_session_ttl than the one in
// force when this one says: a session lasts at most admin_session_ttl, and
// an operator who shortens it must not wait for sessions made before. It
// also ends one unused for admin_session_idle (its last use is recorded to
// within a minute): a browser left signed in, or a copied cookie, is not
// good for the rest of the day.
func (s *Sessions) cap(row *store.AdminSession) {
	if end := row.CreatedAt.Add(s.ttl); end.Before(row.ExpiresAt) {
		row.ExpiresAt = end
	}
	last := row.CreatedAt
	if row.LastUsedAt.After(last) {
		last = row.LastUsedAt
	}
	if end := last.Add(s.idle); end.Before(row.ExpiresAt) {
		row.ExpiresAt = end
	}
}

// Refusal is a sign-in refused, or a request made with a session refused.
type Refusal struct {
	Reason string // one of the Refused or Denied constants
	Status int
	Source netip.Addr
	// Name, Role, Subject, Issuer: who, where known (never a secret).
	Name, Role, Subject, Issuer string
	Method, Path                string
	Session                     string // the session's public id, where known
	Via                         string
	Why                         string // detail safe to record (an IdP's error code)
}

// Refuse records a refusal before it is answered; when it cannot be
// recorded the caller answers 503 (failclosed.ErrUnavailable).
func (s *Sessions) Refuse(ctx context.Context, r Refusal) error {
	typ := TypeSignIn
	if r.Method != "" {
		typ = TypeAdminDenied
	}
	ev := audit.Event{Type: typ, Admin: r.Name, Role: r.Role, Subject: r.Subject, Issuer: r.Issuer, Source: addrString(r.Source),
		Method: r.Method, Path: r.Path, Status: r.Status, Reason: r.Reason}
	d := map[string]any{}
	if r.Session != "" {
		d["session"] = r.Session
	}
	if r.Via != "" {
		d["via"] = r.Via
	}
	if r.Why != "" {
		d["why"] = r.Why
	}
	if len(d) > 0 {
		ev.Detail = d
	}
	clipCaller(&ev)
	if _, err := s.audit.Add(ctx, ev).Wait(ctx); err != nil {
		return unavailable("audit sign-in refusal", err)
	}
	return nil
}

// Login kinds: a browser's or CLI's state, and a CLI's one-time code.
const (
	LoginState   = "state"
	LoginCLICode = "cli_code"
)

// PutLogin records a sign-in step under way under key (a random value the
// next step presents), keyed-hashed; data must hold no secret.
func (s *Sessions) PutLogin(ctx context.Context, key, kind string, data []byte) error {
	if err := s.st.PutAdminLogin(ctx, s.hasher.Sum("login\x00"+key), kind, data, s.now().Add(LoginTTL)); err != nil {
		return unavailable("record sign-in", err)
	}
	return nil
}

// TakeLogin takes the sign-in step under key once: ErrNoLogin when it is
// unknown, already taken or expired.
func (s *Sessions) TakeLogin(ctx context.Context, key, kind string) ([]byte, error) {
	b, err := s.st.TakeAdminLogin(ctx, s.hasher.Sum("login\x00"+key), kind, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoLogin
	}
	if err != nil {
		return nil, unavailable("take sign-in", err)
	}
	return b, nil
}
