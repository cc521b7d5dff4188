// Package devissuer is a local OIDC issuer for trying mayfly pipelines on a
// laptop: it generates a signing key at start, serves OIDC discovery and its
// JWKS, and mints GitHub-Actions-shaped ID tokens, both through a plain
// GET /token endpoint and through the request-URL flow GitHub Actions gives
// its jobs (ACTIONS_ID_TOKEN_REQUEST_URL / _TOKEN). For trying and testing
// human sign-in (admin_oidc) it also has an authorization endpoint (code
// flow, PKCE S256 required, redirects to loopback hosts only; it approves
// at once as its current user, or after a form), a token endpoint and the
// device flow, issuing ID tokens with the user's email and groups.
//
// It owns its key, its discovery document and the claim shape of the tokens
// it mints. It is never for production: anyone who can reach it can mint
// tokens, so it answers only requests addressed to a loopback host (which
// also defeats DNS rebinding from a browser), keeps its key in memory only
// and never logs a token.
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Paths the issuer serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks"
	TokenPath     = "/token"         // GET ?audience=…&claim=value…: the JWT as text (or {"value"} with format=json)
	ActionsPath   = "/actions/token" // GitHub Actions request-URL shape: bearer request token, {"value":"<jwt>"}
)

// DefaultTTL is the lifetime of a minted token, like GitHub's.
const DefaultTTL = 5 * time.Minute

// MaxTTL bounds the lifetime a caller may ask for.
const MaxTTL = time.Hour

// Options configure an Issuer.
type Options struct {
	// URL is the issuer's own URL (its tokens' iss), e.g.
	// "http://127.0.0.1:8700". Required; http on a loopback address or https.
	URL string
	// Algorithm is "RS256" (default, RSA-2048) or "ES256" (P-256).
	Algorithm string
	// RequestToken is the bearer token the request-URL flow requires;
	// "" generates a random one (see RequestToken).
	RequestToken string
	// Audience is used when a request names none (default: URL).
	Audience string
	// Claims override the default claims of every minted token (they in turn
	// are overridden by the claims of one request).
	Claims map[string]any
	// Now is the clock (default time.Now).
	Now func() time.Time
	// User is who the authorization endpoint signs in (default
	// DefaultUser; SetUser changes it).
	User User
	// LoginForm makes the authorization endpoint show a form choosing the
	// email and groups rather than approve at once.
	LoginForm bool
	// ClientSecret, when set, is required of clients at the token and
	// device endpoints (any client_id is accepted).
	ClientSecret string
}

// Issuer is a running local issuer. It is safe for concurrent use.
type Issuer struct {
	url          string
	alg          jose.SignatureAlgorithm
	key          crypto.Signer
	kid          string
	signer       jose.Signer
	requestToken string
	audience     string
	claims       map[string]any
	now          func() time.Time
	runID        atomic.Int64
	human        humanSide
}

// New generates a key and returns an Issuer for opts.
func New(opts Options) (*Issuer, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("devissuer: URL %q must be an absolute http(s) URL", opts.URL)
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("devissuer: http URL %q is allowed only on a loopback address", opts.URL)
	}
	iss := &Issuer{
		url:          strings.TrimSuffix(opts.URL, "/"),
		requestToken: opts.RequestToken,
		audience:     opts.Audience,
		claims:       opts.Claims,
		now:          opts.Now,
	}
	if iss.now == nil {
		iss.now = time.Now
	}
	iss.human = humanSide{user: opts.User, form: opts.LoginForm, secret: opts.ClientSecret, codes: map[string]authCode{}, devices: map[string]*deviceFlow{}}
	if iss.human.user == nil {
		iss.human.user = DefaultUser()
	}
	if iss.audience == "" {
		iss.audience = iss.url
	}
	if iss.requestToken == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("devissuer: request token: %w", err)
		}
		iss.requestToken = hex.EncodeToString(b)
	}
	switch opts.Algorithm {
	case "", "RS256":
		iss.alg = jose.RS256
		iss.key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		iss.alg = jose.ES256
		iss.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("devissuer: algorithm %q not supported (RS256 or ES256)", opts.Algorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("devissuer: generating key: %w", err)
	}
	pub := jose.JSONWebKey{Key: iss.key.Public()}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("devissuer: key id: %w", err)
	}
	iss.kid = hex.EncodeToString(tp[:8])
	iss.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: iss.alg, Key: jose.JSONWebKey{Key: iss.key, KeyID: iss.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("devissuer: signer: %w", err)
	}
	iss.runID.Store(iss.now().Unix())
	return iss, nil
}

// URL is the issuer URL (the iss of its tokens).
func (i *Issuer) URL() string { return i.url }

// Algorithm is the signing algorithm ("RS256" or "ES256").
func (i *Issuer) Algorithm() string { return string(i.alg) }

// RequestToken is the bearer token the request-URL flow requires.
func (i *Issuer) RequestToken() string { return i.requestToken }

// RequestURL is the value for ACTIONS_ID_TOKEN_REQUEST_URL.
func (i *Issuer) RequestURL() string { return i.url + ActionsPath + "?api-version=2.0" }

// JWKS returns the public key set.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: i.key.Public(), KeyID: i.kid, Algorithm: string(i.alg), Use: "sig"}}}
}

var claimName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// reserved claims are set by Mint itself.
var reserved = map[string]bool{"iss": true, "aud": true, "iat": true, "nbf": true, "exp": true, "jti": true}

// Mint signs an ID token with GitHub Actions' claim shape: claims override
// the defaults (repository acme/app on refs/heads/main, …); iss, aud, iat,
// nbf, exp and a random jti are always set by Mint. ttl 0 means DefaultTTL.
func (i *Issuer) Mint(claims map[string]any, audience string, ttl time.Duration) (string, error) {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 || ttl > MaxTTL {
		return "", fmt.Errorf("devissuer: ttl %s out of range (0, %s]", ttl, MaxTTL)
	}
	if audience == "" {
		audience = i.audience
	}
	c := i.defaultClaims(claims)
	for _, src := range []map[string]any{i.claims, claims} {
		for k, v := range src {
			if reserved[k] {
				return "", fmt.Errorf("devissuer: claim %q is set by the issuer", k)
			}
			c[k] = v
		}
	}
	now := i.now()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("devissuer: jti: %w", err)
	}
	c["iss"] = i.url
	c["aud"] = audience
	c["iat"] = now.Unix()
	c["nbf"] = now.Unix()
	c["exp"] = now.Add(ttl).Unix()
	c["jti"] = hex.EncodeToString(jti)
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("devissuer: claims: %w", err)
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devissuer: signing: %w", err)
	}
	return jws.CompactSerialize()
}

// defaultClaims returns GitHub-Actions-shaped claims, derived from the
// repository, ref and environment the caller gives (or the defaults).
func (i *Issuer) defaultClaims(over map[string]any) map[string]any {
	get := func(k, def string) string {
		for _, src := range []map[string]any{over, i.claims} {
			if v, ok := src[k]; ok {
				return fmt.Sprint(v)
			}
		}
		return def
	}
	repo := get("repository", "acme/app")
	owner, _, _ := strings.Cut(repo, "/")
	owner = get("repository_owner", owner)
	ref := get("ref", "refs/heads/main")
	refType := "branch"
	if strings.HasPrefix(ref, "refs/tags/") {
		refType = "tag"
	}
	env := get("environment", "")
	sub := "repo:" + repo + ":ref:" + ref
	if env != "" {
		sub = "repo:" + repo + ":environment:" + env
	}
	sha := make([]byte, 20)
	_, _ = rand.Read(sha)
	run := i.runID.Add(1)
	workflow := get("workflow", "CI")
	c := map[string]any{
		"sub":                   sub,
		"repository":            repo,
		"repository_id":         numericID("repo:" + repo),
		"repository_owner":      owner,
		"repository_owner_id":   numericID("owner:" + owner),
		"repository_visibility": "private",
		"ref":                   ref,
		"ref_type":              refType,
		"ref_protected":         "false",
		"workflow":              workflow,
		"workflow_ref":          repo + "/.github/workflows/ci.yml@" + ref,
		"job_workflow_ref":      repo + "/.github/workflows/ci.yml@" + ref,
		"run_id":                strconv.FormatInt(run, 10),
		"run_number":            strconv.FormatInt(run%10000, 10),
		"run_attempt":           "1",
		"event_name":            "push",
		"actor":                 owner,
		"actor_id":              numericID("actor:" + owner),
		"sha":                   hex.EncodeToString(sha),
		"runner_environment":    "github-hosted",
	}
	if env != "" {
		c["environment"] = env
	}
	return c
}

// numericID derives a stable decimal id from a name, so a repository keeps
// its repository_id from one token to the next.
func numericID(name string) string {
	h := fnv.New64a()
	h.Write([]byte(name))
	return strconv.FormatUint(h.Sum64()%900_000_000+100_000_000, 10)
}

// Handler serves discovery, the JWKS and the two minting endpoints.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, i.discovery)
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, i.JWKS())
	})
	mux.HandleFunc("GET "+TokenPath, i.token)
	mux.HandleFunc("GET "+ActionsPath, i.actions)
	mux.HandleFunc("GET "+AuthorizePath, i.authorize)
	mux.HandleFunc("POST "+AuthorizePath, i.authorize)
	mux.HandleFunc("POST "+OAuthTokenPath, i.oauthToken)
	mux.HandleFunc("POST "+DevicePath, i.deviceStart)
	mux.HandleFunc("GET "+DeviceApprove, i.deviceApprove)
	return localOnly(mux)
}

// localOnly refuses requests whose Host is not a loopback name or address:
// a web page the developer visits cannot mint tokens through DNS rebinding.
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !loopbackHost(host) {
			writeErr(w, http.StatusForbidden, "forbidden", "the dev issuer answers only requests to a loopback host")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func loopbackHost(h string) bool {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (i *Issuer) discovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.url + JWKSPath,
		"subject_types_supported":               []string{"public", "pairwise"},
		"authorization_endpoint":                i.url + AuthorizePath,
		"token_endpoint":                        i.url + OAuthTokenPath,
		"device_authorization_endpoint":         i.url + DevicePath,
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", "urn:ietf:params:oauth:grant-type:device_code"},
		"response_types_supported":              []string{"code", "id_token"},
		"id_token_signing_alg_values_supported": []string{string(i.alg)},
		"scopes_supported":                      []string{"openid", "email", "profile", "groups"},
		"claims_supported": []string{"sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha",
			"repository", "repository_id", "repository_owner", "repository_owner_id", "run_id", "run_number",
			"run_attempt", "actor", "actor_id", "workflow", "workflow_ref", "job_workflow_ref", "event_name",
			"ref_type", "environment", "runner_environment", "email", "groups", "nonce"},
	})
}

// claimsFromQuery takes every query parameter except the control ones as a
// string claim (GitHub sends all its claims as strings).
func claimsFromQuery(q url.Values) (map[string]any, error) {
	c := map[string]any{}
	for k, vs := range q {
		switch k {
		case "audience", "format", "ttl", "api-version":
			continue
		}
		if !claimName.MatchString(k) {
			return nil, fmt.Errorf("claim name %q is not [a-z][a-z0-9_]*", k)
		}
		if reserved[k] {
			return nil, fmt.Errorf("claim %q is set by the issuer", k)
		}
		if len(vs) != 1 || len(vs[0]) > 1024 {
			return nil, fmt.Errorf("claim %q needs exactly one value of at most 1024 bytes", k)
		}
		c[k] = vs[0]
	}
	return c, nil
}

func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	claims, err := claimsFromQuery(q)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	var ttl time.Duration
	if s := q.Get("ttl"); s != "" {
		if ttl, err = time.ParseDuration(s); err != nil {
			writeErr(w, http.StatusBadRequest, "invalid_request", "ttl: "+err.Error())
			return
		}
	}
	tok, err := i.Mint(claims, q.Get("audience"), ttl)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if q.Get("format") == "json" {
		writeJSON(w, http.StatusOK, map[string]string{"value": tok})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, tok)
}

// actions answers like GitHub's ACTIONS_ID_TOKEN_REQUEST_URL: a bearer
// request token, an optional audience, {"value":"<jwt>"}.
func (i *Issuer) actions(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "bearer") || subtle.ConstantTimeCompare([]byte(cred), []byte(i.requestToken)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dev-issuer"`)
		writeErr(w, http.StatusUnauthorized, "unauthorized", "a bearer request token is required")
		return
	}
	q := r.URL.Query()
	claims, err := claimsFromQuery(q)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	tok, err := i.Mint(claims, q.Get("audience"), 0)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"value": tok})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// ErrNotLoopback is returned by CheckListen for a non-loopback address.
var ErrNotLoopback = errors.New("devissuer: listens on loopback addresses only")

// CheckListen accepts only a loopback listen address (host:port).
func CheckListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devissuer: listen address %q: %w", addr, err)
	}
	if !loopbackHost(host) {
		return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
	}
	return nil
}
