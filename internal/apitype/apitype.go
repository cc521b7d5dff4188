// Package apitype holds the request and response bodies of mayfly's /v1
// HTTP API (SPEC section 4), shared by the server's handlers (internal/api)
// and every client (internal/client), so that the two sides cannot drift.
// It is the JSON contract written down as Go types, as Tailscale's tailcfg
// is for its control protocol.
//
// It owns field names, JSON tags and the constants of the wire format. It
// must never hold behaviour beyond trivial helpers, import another mayfly
// package, or carry a secret value in any response type: secrets go in
// (SecretPutRequest) and never come out. The one exception is the job's own
// minted credentials (TokenResponse.UpstreamCredentials, SPEC section 9),
// which exist only to be handed to that job.
package apitype

import (
	"encoding/json"
	"time"
)

// Token-exchange constants (RFC 8693).
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
)

// Error is every refusal's body: {"error":"code","error_description":"…"}.
// Check, on a control-plane refusal (401/403), names the check that failed
// so that a client can say what to fix.
type Error struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
	Check       string `json:"check,omitempty"`
}

// The checks of the control plane's gate, in the order they run (Error.Check).
const (
	CheckNetwork           = "network"            // the caller's address is not in admin_cidrs
	CheckClientCertificate = "client_certificate" // admin_client_ca is set and no verified certificate came
	CheckToken             = "token"              // no admin token, or not a live one
	CheckRole              = "role"               // the token's role is too weak for the endpoint
)

// TokenResponse is POST /v1/token's answer (RFC 8693 section 2.2.1).
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"` // "Bearer" or "DPoP"
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
	LeaseID         string `json:"lease_id"`
	// UpstreamCredentials are the credentials minted for this lease and
	// delivered to the job (deliver: job), by upstream name (SPEC section 9).
	UpstreamCredentials map[string]UpstreamCredential `json:"upstream_credentials,omitempty"`
}

// UpstreamCredential is one minted credential: a token (GitHub App
// installation token) or a database role (dsn, username, password).
type UpstreamCredential struct {
	Token     string `json:"token,omitempty"`
	DSN       string `json:"dsn,omitempty"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	ExpiresAt string `json:"expires_at"` // RFC 3339
}

// Secrets returns the values a masker must hide: the token, the password
// and the DSN that holds it.
func (c UpstreamCredential) Secrets() []string {
	var out []string
	for _, v := range []string{c.Token, c.Password, c.DSN} {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// RenewResponse is POST /v1/token/renew's answer.
type RenewResponse struct {
	LeaseID   string `json:"lease_id"`
	ExpiresIn int64  `json:"expires_in"`
	ExpiresAt string `json:"expires_at"` // RFC 3339
	Scope     string `json:"scope"`
}

// LeakResponse is POST /v1/leaks' answer.
type LeakResponse struct {
	Revoked        []RevokedLease `json:"revoked"`
	AlreadyRevoked int            `json:"already_revoked"`
	Unknown        int            `json:"unknown"`
	// RevokedAdmin lists admin tokens the report revoked (hints only).
	RevokedAdmin []RevokedAdminToken `json:"revoked_admin_tokens,omitempty"`
	// RevokedSessions lists admin sessions (SSO sign-ins) the report
	// revoked.
	RevokedSessions []RevokedSession `json:"revoked_sessions,omitempty"`
}

// RevokedSession names an admin session a leak report revoked, by its
// public id (no part of a session value is ever shown).
type RevokedSession struct {
	ID string `json:"id"`
}

// RevokedLease names a lease a leak report revoked; Hint is token.Hint.
type RevokedLease struct {
	LeaseID string `json:"lease_id"`
	Hint    string `json:"hint"`
}

// RevokedAdminToken names an admin token a leak report revoked.
type RevokedAdminToken struct {
	Hint string `json:"hint"`
}

// Introspection is POST /v1/introspect's answer (RFC 7662). Only Active is
// set for a token that is not live.
type Introspection struct {
	Active    bool          `json:"active"`
	LeaseID   string        `json:"lease_id,omitempty"`
	Scope     string        `json:"scope,omitempty"`
	Issuer    string        `json:"iss,omitempty"`
	Subject   string        `json:"sub,omitempty"`
	Job       string        `json:"job,omitempty"`
	IssuedAt  int64         `json:"iat,omitempty"`
	ExpiresAt int64         `json:"exp,omitempty"`
	TokenType string        `json:"token_type,omitempty"`
	Uses      int64         `json:"uses,omitempty"`
	Cnf       *Confirmation `json:"cnf,omitempty"`
}

// Confirmation is RFC 7800's cnf: the DPoP key a token is bound to.
type Confirmation struct {
	JKT string `json:"jkt"`
}

// Lease is one lease as GET /v1/leases lists it (never its token).
type Lease struct {
	LeaseID   string            `json:"lease_id"`
	Issuer    string            `json:"issuer"`
	Subject   string            `json:"subject"`
	Job       string            `json:"job"`
	Claims    map[string]string `json:"claims,omitempty"`
	Grants    []string          `json:"grants"`
	IssuedAt  time.Time         `json:"issued_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	MaxExpiry time.Time         `json:"max_expires_at"`
	Source    string            `json:"source,omitempty"`
	BindIP    bool              `json:"bind_source_ip"`
	DPoP      bool              `json:"dpop"`
	Uses      int64             `json:"uses"`
	RevokedAt *time.Time        `json:"revoked_at,omitempty"`
	Reason    string            `json:"revoke_reason,omitempty"`
}

// State is "revoked", "expired" or "live" at now.
func (l Lease) State(now time.Time) string {
	switch {
	case l.RevokedAt != nil:
		return "revoked"
	case !l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt):
		return "expired"
	}
	return "live"
}

// Lease listing limits: one page holds at most MaxLeasePage leases, and
// DefaultLeasePage when the request names no limit.
const (
	DefaultLeasePage = 1000
	MaxLeasePage     = 1000
)

// LeaseList is GET /v1/leases' answer. NextCursor, when set, is passed as
// ?cursor= to get the next page: more leases match than this page holds.
type LeaseList struct {
	Leases     []Lease `json:"leases"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// RevokeLeasesRequest is POST /v1/leases/revoke's body: a lease id alone, or
// a non-empty filter.
type RevokeLeasesRequest struct {
	LeaseID string `json:"lease_id,omitempty"`
	Grant   string `json:"grant,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	Job     string `json:"job,omitempty"`
}

// RevokeLeasesResponse is POST /v1/leases/revoke's answer.
type RevokeLeasesResponse struct {
	Revoked int `json:"revoked"`
}

// SecretPutRequest is PUT /v1/secrets/{name}'s body. Value is a pointer so
// that a missing value is told from an empty one.
type SecretPutRequest struct {
	Value *string `json:"value"`
	// Rotate, when present, sets the secret's rotation (SecretRotate's
	// JSON); null removes it; absent leaves it as it was.
	Rotate json.RawMessage `json:"rotate,omitempty"`
}

// SecretRotate is a secret's rotation settings: how often, how long the
// replaced value stays usable, and which rotator makes the new one.
type SecretRotate struct {
	Every string    `json:"every"`
	Grace string    `json:"grace,omitempty"`
	Via   RotateVia `json:"via"`
}

// RotateVia names a rotator: exactly one field is set. Command names a
// rotator of the server's config file, never a program.
type RotateVia struct {
	PostgresPassword *RotatePostgres `json:"postgres_password,omitempty"`
	Command          string          `json:"command,omitempty"`
}

// RotatePostgres rotates Role's password through the admin DSN stored in
// the secret AdminDSNSecret.
type RotatePostgres struct {
	AdminDSNSecret string `json:"admin_dsn_secret"`
	Role           string `json:"role"`
}

// SecretRotation is a secret's rotation as shown: its settings and how it
// went, never a value.
type SecretRotation struct {
	SecretRotate
	NextAt      time.Time  `json:"next_at"`
	LastAt      *time.Time `json:"last_at,omitempty"`
	LastVersion int        `json:"last_version,omitempty"`
	Failures    int        `json:"failures"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// SecretRotateResponse is POST /v1/secrets/{name}/rotate's answer.
type SecretRotateResponse struct {
	Name       string    `json:"name"`
	Version    int       `json:"version"`
	NextAt     time.Time `json:"next_at"`
	GraceUntil time.Time `json:"grace_until"`
}

// SecretPutResponse is PUT /v1/secrets/{name}'s answer.
type SecretPutResponse struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// SecretMeta describes a stored secret, never its value.
type SecretMeta struct {
	Name       string    `json:"name"`
	Version    int       `json:"version"`
	KeyVersion int       `json:"key_version"`
	CreatedAt  time.Time `json:"created_at"`
	// Rotation is set when the secret carries one.
	Rotation *SecretRotation `json:"rotation,omitempty"`
}

// SecretList is GET /v1/secrets' answer.
type SecretList struct {
	Secrets []SecretMeta `json:"secrets"`
}

// SecretDeleteResponse is DELETE /v1/secrets/{name}'s answer.
type SecretDeleteResponse struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

// RotateMasterKeyResponse is POST /v1/sys/rotate-master-key's answer.
type RotateMasterKeyResponse struct {
	Version int `json:"version"`
}

// Headers of GET /v1/policy, whose body is the policy YAML.
const (
	HeaderPolicyVersion = "Mayfly-Policy-Version"
	HeaderPolicyHash    = "Mayfly-Policy-Hash"
)

// PolicyApplyResponse is PUT /v1/policy's answer.
type PolicyApplyResponse struct {
	Version   int64    `json:"version"`
	Hash      string   `json:"hash"`
	Changes   []string `json:"changes"`
	Unchanged bool     `json:"unchanged"`
	Revoked   int      `json:"revoked"`
}

// PolicyPlanResponse is POST /v1/policy/plan's answer.
type PolicyPlanResponse struct {
	Changes []string `json:"changes"`
	// Revokes lists the grants in force that the policy removes and that
	// have live tokens: applying it revokes them, so PUT /v1/policy needs
	// ?allow_revoke=true for it.
	Revokes []PolicyRevocation `json:"revokes"`
}

// PolicyRevocation is a grant a policy removes and its live tokens.
type PolicyRevocation struct {
	Grant  string `json:"grant"`
	Leases int    `json:"leases"`
}

// PolicyRevocationRefused is PUT /v1/policy's 409 answer
// (revocation_not_confirmed): nothing was applied.
type PolicyRevocationRefused struct {
	Error
	Revokes []PolicyRevocation `json:"revokes"`
}

// AdminTokenCreateRequest is POST /v1/admin/tokens' body.
type AdminTokenCreateRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// TTLSeconds is how long the token works (0: the server's default,
	// 90 days; at most its admin_token_max_ttl).
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
}

// AdminTokenCreated is POST /v1/admin/tokens' answer: the token, once.
type AdminTokenCreated struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AdminToken describes an admin token, never the token.
type AdminToken struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// ExpiresAt is absent for a token made before admin tokens expired.
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// AdminTokenList is GET /v1/admin/tokens' answer.
type AdminTokenList struct {
	Tokens []AdminToken `json:"tokens"`
}

// AdminTokenRevokeResponse is DELETE /v1/admin/tokens/{name}'s answer.
type AdminTokenRevokeResponse struct {
	Name    string `json:"name"`
	Revoked bool   `json:"revoked"`
}

// Health is GET /healthz's answer.
type Health struct {
	Status string `json:"status"`
	// The build the node runs (mayfly version): module version or
	// "devel+<revision>", VCS revision, Go version.
	Version  string `json:"version,omitempty"`
	Revision string `json:"revision,omitempty"`
	Go       string `json:"go,omitempty"`
}

// Ready is GET /readyz's answer.
type Ready struct {
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

// SessionToken is a CLI sign-in's answer (POST /v1/auth/cli/token, POST
// /v1/auth/device/token): a session token for Authorization: Bearer.
type SessionToken struct {
	SessionToken string    `json:"session_token"`
	Name         string    `json:"name"`
	Role         string    `json:"role"`
	Session      string    `json:"session"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// CLITokenRequest trades a loopback sign-in's one-time code.
type CLITokenRequest struct {
	Code         string `json:"code"`
	CodeVerifier string `json:"code_verifier"`
}

// DeviceStart is POST /v1/auth/device's answer (RFC 8628's, relayed).
type DeviceStart struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete,omitempty"`
	Interval                int64  `json:"interval,omitempty"`
	ExpiresIn               int64  `json:"expires_in,omitempty"`
}

// DeviceTokenRequest polls a device sign-in.
type DeviceTokenRequest struct {
	DeviceCode string `json:"device_code"`
}

// SignOutResponse is POST /v1/auth/logout's answer.
type SignOutResponse struct {
	SignedOut bool `json:"signed_out"`
}

// Session is a signed-in human's session (never its value).
type Session struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Via        string     `json:"via"`
	Source     string     `json:"source,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// SessionList is GET /v1/admin/sessions' answer: sessions not yet expired.
type SessionList struct {
	Sessions []Session `json:"sessions"`
}

// SessionRevokeResponse is DELETE /v1/admin/sessions/{id}'s answer.
type SessionRevokeResponse struct {
	ID      string `json:"id"`
	Revoked bool   `json:"revoked"`
}

// WhoAmI is GET /v1/auth/whoami's answer: the caller and its role.
type WhoAmI struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Session string `json:"session,omitempty"`
	Via     string `json:"via,omitempty"`
	// CSRF is the session's CSRF token, for a browser signed in with the
	// session cookie (send it as X-CSRF-Token on state-changing requests).
	CSRF string `json:"csrf,omitempty"`
}

// AuthConfig is GET /v1/auth/config's answer (404 on a server without
// admin_oidc): whether the provider offers the device flow, and whether
// it could be reached to say.
type AuthConfig struct {
	SignIn       bool `json:"sign_in"`
	Device       bool `json:"device"`
	ProviderDown bool `json:"provider_down,omitempty"`
}
