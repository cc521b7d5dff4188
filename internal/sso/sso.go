// Package sso is mayfly's OpenID Connect relying party for human sign-in
// (admin_oidc): it discovers the company's identity provider, builds the
// authorization request (code flow, PKCE S256, state, nonce), trades a
// callback's code for an ID token and verifies it, runs the device flow,
// and maps a claim (groups, email…) to one of mayfly's admin roles. It
// also owns the shape of what the browser and the CLI send back (callback
// parameters, the session cookie's name) and the signed-in caller a request
// carries in its context (CallerFrom).
//
// It never keeps a session, a code or a token, writes nothing to the store
// and records nothing: the authority does. The client secret it is given is
// sent only to the provider's token endpoint.
package sso

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mayfly-sh/mayfly/internal/netfail"
)

// Config is admin_oidc.
type Config struct {
	// Issuer is the provider's issuer URL (discovery at
	// Issuer/.well-known/openid-configuration).
	Issuer string `yaml:"issuer"`
	// ClientID and the file holding its secret (empty for a public client).
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is this server's callback as registered with the
	// provider, e.g. https://mayfly.example.com/ui/callback. Its path is
	// where the server takes callbacks; its origin is the only one that
	// may make state-changing requests with the session cookie.
	RedirectURL string `yaml:"redirect_url"`
	// Claim is the ID token claim mapped to roles: a string or a list of
	// strings (default "groups").
	Claim string `yaml:"claim"`
	// Roles map a role (admin, operator, auditor) to the claim values that
	// have it; a user with values of several roles gets the strongest.
	Roles map[string][]string `yaml:"roles"`
	// Scopes asked for besides openid (default: email profile, and groups
	// when Claim is groups).
	Scopes []string `yaml:"scopes"`
}

// Role names, weakest first (as authority.RoleRank orders them; this
// package does not import the authority).
var roleOrder = []string{"auditor", "operator", "admin"}

// Check validates c (without reaching the provider).
func (c *Config) Check() error {
	u, err := url.Parse(c.Issuer)
	if c.Issuer == "" || err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname()))) {
		return fmt.Errorf("admin_oidc.issuer %q must be an https URL (http only on a loopback address)", c.Issuer)
	}
	if c.ClientID == "" {
		return errors.New("admin_oidc.client_id is required")
	}
	r, err := url.Parse(c.RedirectURL)
	if c.RedirectURL == "" || err != nil || r.Host == "" || (r.Scheme != "https" && !(r.Scheme == "http" && loopback(r.Hostname()))) ||
		!strings.HasPrefix(r.Path, "/") || r.RawQuery != "" || r.Fragment != "" {
		return fmt.Errorf("admin_oidc.redirect_url %q must be an absolute https URL of this server with a path and no query (http only on a loopback address)", c.RedirectURL)
	}
	if strings.HasPrefix(r.Path, "/v1/") || strings.HasPrefix(r.Path, "/gw/") || slices.Contains(takenPaths, r.Path) {
		return fmt.Errorf("admin_oidc.redirect_url path %q is taken by the API", r.Path)
	}
	// The callback is a route of its own: one path, exactly.
	if !plainPath(r.Path) {
		return fmt.Errorf("admin_oidc.redirect_url path %q must be one plain path: no empty, . or .. segment, no trailing /, no {, } or space", r.Path)
	}
	if slices.Contains(profileClaims, strings.ToLower(c.Claim)) {
		return fmt.Errorf("admin_oidc.claim %q is a profile claim the user may set at many providers: map roles from groups, email (verified only) or sub", c.Claim)
	}
	if len(c.Roles) == 0 {
		return errors.New("admin_oidc.roles must map at least one role (admin, operator, auditor) to claim values")
	}
	for role, vals := range c.Roles {
		if !slices.Contains(roleOrder, role) {
			return fmt.Errorf("admin_oidc.roles: %q is not a role (admin, operator, auditor)", role)
		}
		for _, v := range vals {
			if v == "" {
				return fmt.Errorf("admin_oidc.roles.%s: an empty value would match nobody", role)
			}
		}
	}
	return nil
}

// profileClaims are OIDC Core's standard claims (section 5.1) other than
// sub and email: the user's profile, which many providers let the user
// edit (preferred_username too: "MUST NOT rely upon this value being
// unique"), or a flag. A role mapped from one would go to whoever set it
// to a listed value. email is taken, verified only (Map).
var profileClaims = []string{"name", "given_name", "family_name", "middle_name", "nickname", "preferred_username", "profile",
	"picture", "website", "gender", "birthdate", "zoneinfo", "locale", "phone_number", "phone_number_verified", "address",
	"updated_at", "email_verified"}

// takenPaths are the server's own paths besides /v1/ and /gw/: a callback
// there would conflict with them.
var takenPaths = []string{"/healthz", "/readyz", "/metrics", "/ui/login", "/ui/logout"}

// plainPath reports whether p is a clean path of more than "/", not
// ending in "/", without a character the router reads as a wildcard or a
// separator: registered as the callback's route, it matches that one path
// and takes no subtree (such as the console's pages).
func plainPath(p string) bool {
	if p == "/" || path.Clean(p) != p {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

func loopback(h string) bool {
	return h == "127.0.0.1" || h == "::1" || strings.EqualFold(h, "localhost")
}

// ClaimName is the claim mapped to roles.
func (c Config) ClaimName() string {
	if c.Claim == "" {
		return "groups"
	}
	return c.Claim
}

// Errors of Exchange, DevicePoll and the provider, each a reason a sign-in
// is refused.
var (
	ErrIdPDown   = errors.New("the identity provider cannot be reached")
	ErrCode      = errors.New("the identity provider refused the authorization code")
	ErrIDToken   = errors.New("the ID token is not valid")
	ErrNonce     = errors.New("the ID token's nonce is not this sign-in's")
	ErrIssuer    = errors.New("the callback comes from another issuer")
	ErrUnmapped  = errors.New("the user's claim maps to no role")
	ErrNoDevice  = errors.New("the identity provider offers no device flow")
	ErrPending   = errors.New("the user has not approved the device yet")
	ErrSlowDown  = errors.New("polling too fast")
	ErrDeviceEnd = errors.New("the device code was denied or expired")
)

// Identity is who signed in, per a verified ID token.
type Identity struct {
	Name    string // "oidc:" and the verified email, else the sub
	Subject string
	Issuer  string
	Role    string
}

// RP is the relying party. It discovers the provider on first use (and
// again a few seconds after a failure), so a provider that is down at
// start only refuses sign-ins, never stops the server.
type RP struct {
	cfg    Config
	secret string
	client *http.Client

	// mu guards the fields below and is never held across a network call:
	// sign-ins against a silent provider must not queue behind each other.
	mu       sync.Mutex
	provider *oidc.Provider
	flight   *discovery // the discovery in flight, nil when none
	failed   error      // the last discovery's failure, remembered until failedAt+failMemory
	failedAt time.Time
}

// discovery is one discovery shared by every caller that wants the
// provider while it runs; done is closed once p or err is set.
type discovery struct {
	done chan struct{}
	p    *oidc.Provider
	err  error
}

// failMemory is how long a failed discovery answers for the provider, so
// that sign-ins against a provider that is down are refused at once
// instead of each waiting for the timeout.
const failMemory = 5 * time.Second

// New returns the relying party for cfg with the client secret (the
// contents of client_secret_file) and the HTTP client that reaches the
// provider (nil: one with a 10 s timeout).
func New(cfg Config, secret string, client *http.Client) (*RP, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &RP{cfg: cfg, secret: strings.TrimSpace(secret), client: client}, nil
}

// Config returns the configuration.
func (rp *RP) Config() Config { return rp.cfg }

// CallbackPath is the path of RedirectURL.
func (rp *RP) CallbackPath() string {
	u, _ := url.Parse(rp.cfg.RedirectURL)
	return u.Path
}

// Origin is RedirectURL's scheme://host[:port]: the server's origin as
// browsers serialize it in an Origin header (RFC 6454: host in lower case,
// no default port), so that however redirect_url spells it, the console's
// own forms are not taken for cross-site ones.
func (rp *RP) Origin() string {
	u, _ := url.Parse(rp.cfg.RedirectURL)
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if port == "" || scheme == "https" && port == "443" || scheme == "http" && port == "80" {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// Secure reports whether the server is reached over https (the cookie is
// then Secure and __Host- prefixed), by RedirectURL's scheme in any case.
func (rp *RP) Secure() bool {
	u, err := url.Parse(rp.cfg.RedirectURL)
	return err == nil && strings.EqualFold(u.Scheme, "https")
}

func (rp *RP) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, rp.client)
}

func (rp *RP) discover(ctx context.Context) (*oidc.Provider, error) {
	rp.mu.Lock()
	if rp.provider != nil {
		defer rp.mu.Unlock()
		return rp.provider, nil
	}
	if rp.failed != nil && time.Since(rp.failedAt) < failMemory {
		defer rp.mu.Unlock()
		return nil, rp.failed
	}
	d := rp.flight
	if d == nil {
		d = &discovery{done: make(chan struct{})}
		rp.flight = d
		// Detached from this caller's cancellation: the others share it.
		go rp.run(context.WithoutCancel(ctx), d)
	}
	rp.mu.Unlock()
	select {
	case <-d.done:
		return d.p, d.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: discovery at %s: %w", ErrIdPDown, rp.cfg.Issuer, ctx.Err())
	}
}

// run discovers the provider for d and records the outcome.
func (rp *RP) run(ctx context.Context, d *discovery) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(rp.ctx(ctx), rp.cfg.Issuer)
	if err != nil {
		err = fmt.Errorf("%w: discovery at %s: %w", ErrIdPDown, rp.cfg.Issuer, err)
	}
	rp.mu.Lock()
	rp.flight = nil
	if err == nil {
		rp.provider = p
	} else {
		rp.failed, rp.failedAt = err, time.Now()
	}
	rp.mu.Unlock()
	d.p, d.err = p, err
	close(d.done)
}

func (rp *RP) oauth(p *oidc.Provider) *oauth2.Config {
	scopes := []string{oidc.ScopeOpenID}
	if len(rp.cfg.Scopes) > 0 {
		scopes = append(scopes, rp.cfg.Scopes...)
	} else {
		scopes = append(scopes, "email", "profile")
		if rp.cfg.ClaimName() == "groups" {
			scopes = append(scopes, "groups")
		}
	}
	return &oauth2.Config{ClientID: rp.cfg.ClientID, ClientSecret: rp.secret, Endpoint: p.Endpoint(), RedirectURL: rp.cfg.RedirectURL, Scopes: scopes}
}

// AuthURL is the provider's authorization URL for one sign-in: code flow
// with state, nonce and the S256 challenge of verifier.
func (rp *RP) AuthURL(ctx context.Context, state, nonce, verifier string) (string, error) {
	p, err := rp.discover(ctx)
	if err != nil {
		return "", err
	}
	return rp.oauth(p).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// CheckIssuer judges a callback's iss parameter (RFC 9207, empty when
// absent): it must be the configured issuer, exactly, and it must be there
// when the provider's discovery says it sends it. A callback naming
// another issuer is another authorization server's answer (a mix-up),
// whose code must not be sent to ours.
func (rp *RP) CheckIssuer(ctx context.Context, iss string) error {
	if iss != "" {
		if iss != rp.cfg.Issuer {
			return fmt.Errorf("%w (iss %q)", ErrIssuer, safeCode(iss))
		}
		return nil
	}
	p, err := rp.discover(ctx)
	if err != nil {
		return err
	}
	var meta struct {
		Sends bool `json:"authorization_response_iss_parameter_supported"`
	}
	if err := p.Claims(&meta); err == nil && meta.Sends {
		return fmt.Errorf("%w: the provider sends iss and this callback has none", ErrIssuer)
	}
	return nil
}

// Exchange trades a callback's code (with the sign-in's PKCE verifier) for
// an ID token, verifies it (issuer, audience and authorized party, expiry,
// signature, nonce) and maps the user to a role.
func (rp *RP) Exchange(ctx context.Context, code, verifier, nonce string) (Identity, error) {
	p, err := rp.discover(ctx)
	if err != nil {
		return Identity{}, err
	}
	ctx, cancel := context.WithTimeout(rp.ctx(ctx), 15*time.Second)
	defer cancel()
	tok, err := rp.oauth(p).Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Identity{}, tokenError(err, ErrCode)
	}
	return rp.identity(ctx, p, tok, nonce)
}

// tokenError tells a provider that answered no (as) from one that did not
// answer (ErrIdPDown).
func tokenError(err error, as error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.Response != nil && re.Response.StatusCode >= 500 {
			return fmt.Errorf("%w: token endpoint answered %d", ErrIdPDown, re.Response.StatusCode)
		}
		code := re.ErrorCode
		if code == "" {
			code = "refused"
		}
		return fmt.Errorf("%w (%s)", as, safeCode(code))
	}
	// What went wrong, never its text: Go quotes a malformed answer's
	// line, which a provider echoing the request puts the client secret in.
	return fmt.Errorf("%w: token endpoint: %w", ErrIdPDown, netfail.Describe(err))
}

func (rp *RP) identity(ctx context.Context, p *oidc.Provider, tok *oauth2.Token, nonce string) (Identity, error) {
	raw, _ := tok.Extra("id_token").(string)
	return rp.verify(ctx, p, raw, nonce)
}

func (rp *RP) verify(ctx context.Context, p *oidc.Provider, raw, nonce string) (Identity, error) {
	if raw == "" {
		return Identity{}, fmt.Errorf("%w: the token response has no id_token", ErrIDToken)
	}
	idt, err := p.VerifierContext(ctx, &oidc.Config{ClientID: rp.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrIDToken, err)
	}
	if nonce != "" && !equal(idt.Nonce, nonce) || nonce == "" && idt.Nonce != "" {
		return Identity{}, ErrNonce
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %w", ErrIDToken, err)
	}
	// OIDC Core §3.1.3.7 (go-oidc checks only that aud lists us): a token
	// for several audiences, or naming an authorized party, is ours only
	// when that party is this client, not another client of the provider
	// that also lists us.
	azp, hasAzp := claims["azp"]
	if s, _ := azp.(string); (hasAzp || len(idt.Audience) > 1) && s != rp.cfg.ClientID {
		return Identity{}, fmt.Errorf("%w: issued to another client (azp %q)", ErrIDToken, safeCode(s))
	}
	id := Identity{Subject: idt.Subject, Issuer: idt.Issuer, Name: "oidc:" + displayName(claims, idt.Subject)}
	id.Role = rp.Map(claims)
	if id.Role == "" {
		return id, ErrUnmapped
	}
	return id, nil
}

// Map returns the strongest role the configured claim of claims maps to,
// or "" for none.
func (rp *RP) Map(claims map[string]any) string {
	var vals []string
	switch v := claims[rp.cfg.ClaimName()].(type) {
	case string:
		vals = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				vals = append(vals, s)
			}
		}
	}
	// An email the provider has not verified is whatever the user typed:
	// it names nobody (providers that let a user set an unverified email
	// would otherwise hand out its owner's role).
	if rp.cfg.ClaimName() == "email" && !emailVerified(claims) {
		return ""
	}
	// Strongest first; an email claim matches case-insensitively.
	for i := len(roleOrder) - 1; i >= 0; i-- {
		for _, want := range rp.cfg.Roles[roleOrder[i]] {
			for _, got := range vals {
				if got == want || (rp.cfg.ClaimName() == "email" && asciiEqualFold(got, want)) {
					return roleOrder[i]
				}
			}
		}
	}
	return ""
}

// asciiEqualFold compares emails ignoring ASCII case only: Unicode folding
// (strings.EqualFold) takes the Kelvin sign for "k" and "ſ" for "s", so
// an address someone else may hold would carry a configured one's role.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// displayName is the name audit entries give the session: the verified
// email, else the subject. Never preferred_username or an unverified email,
// which a user may set to someone else's.
func displayName(claims map[string]any, sub string) string {
	if s, ok := claims["email"].(string); ok && s != "" && len(s) <= 200 && emailVerified(claims) {
		return s
	}
	if len(sub) > 200 {
		sub = sub[:200]
	}
	return sub
}

// emailVerified reports whether the provider vouches for the email claim
// (OIDC Core's email_verified; some providers send it as a string).
func emailVerified(claims map[string]any) bool {
	switch v := claims["email_verified"].(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

// DeviceSupported reports whether the provider's discovery offers the
// device flow (an error when it cannot be reached).
func (rp *RP) DeviceSupported(ctx context.Context) (bool, error) {
	p, err := rp.discover(ctx)
	if err != nil {
		return false, err
	}
	return p.Endpoint().DeviceAuthURL != "", nil
}

// DeviceAuth starts a device flow (RFC 8628) at the provider.
func (rp *RP) DeviceAuth(ctx context.Context) (*oauth2.DeviceAuthResponse, error) {
	p, err := rp.discover(ctx)
	if err != nil {
		return nil, err
	}
	cfg := rp.oauth(p)
	if cfg.Endpoint.DeviceAuthURL == "" {
		return nil, ErrNoDevice
	}
	ctx, cancel := context.WithTimeout(rp.ctx(ctx), 15*time.Second)
	defer cancel()
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, tokenError(err, ErrCode)
	}
	return da, nil
}

// DevicePoll asks the provider once whether deviceCode was approved:
// ErrPending or ErrSlowDown while not yet, ErrDeviceEnd when denied or
// expired, the identity once approved.
func (rp *RP) DevicePoll(ctx context.Context, deviceCode string) (Identity, error) {
	p, err := rp.discover(ctx)
	if err != nil {
		return Identity{}, err
	}
	cfg := rp.oauth(p)
	if cfg.Endpoint.DeviceAuthURL == "" {
		return Identity{}, ErrNoDevice
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// One poll, not oauth2's DeviceAccessToken loop: the CLI polls this
	// server, which must not hold a request open for minutes.
	v := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {deviceCode}, "client_id": {cfg.ClientID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Endpoint.TokenURL, strings.NewReader(v.Encode()))
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrIdPDown, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if rp.secret != "" {
		req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(rp.secret))
	}
	resp, err := rp.client.Do(req)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: token endpoint: %w", ErrIdPDown, netfail.Describe(err))
	}
	defer resp.Body.Close()
	var body struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		if resp.StatusCode >= 500 {
			return Identity{}, fmt.Errorf("%w: token endpoint answered %d", ErrIdPDown, resp.StatusCode)
		}
		return Identity{}, fmt.Errorf("%w: token endpoint answered %d without JSON", ErrDeviceEnd, resp.StatusCode)
	}
	switch {
	case resp.StatusCode >= 500:
		return Identity{}, fmt.Errorf("%w: token endpoint answered %d", ErrIdPDown, resp.StatusCode)
	case body.Error == "authorization_pending":
		return Identity{}, ErrPending
	case body.Error == "slow_down":
		return Identity{}, ErrSlowDown
	case body.Error != "" || resp.StatusCode != http.StatusOK:
		return Identity{}, fmt.Errorf("%w (%s)", ErrDeviceEnd, safeCode(body.Error))
	}
	return rp.verify(ctx, p, body.IDToken, "")
}

// equal compares two strings in constant time for their length.
func equal(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var d byte
	for i := 0; i < len(a); i++ {
		d |= a[i] ^ b[i]
	}
	return d == 0
}

// safeCode keeps an OAuth error code (RFC 6749: %x20-21 / %x23-5B /
// %x5D-7E) short and printable, for an audit entry or a page.
func safeCode(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' {
			b[i] = '?'
		}
	}
	return string(b)
}
