// Package identity verifies the OIDC ID tokens that CI platforms (GitHub
// Actions, GitLab CI, any OIDC issuer) give their jobs, following RFC 8725:
// the issuer is routed by exact `iss`, the algorithm list is pinned per
// issuer, keys come only from the issuer's JWKS (discovered or configured),
// cached per issuer and refreshed on an unknown kid at most once per
// cooldown. It also knows the claim sets of the common CI platforms
// (presets) and records a token's jti once, through a store it is given.
//
// It owns issuers, the discovery/JWKS cache, ID-token verification and
// jti-once. It never decides what a caller may do (that is policy's job, and
// it never imports policy), never trusts a key or an algorithm named by the
// token itself, and never puts a token into an error or a log.
package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// Defaults for Options fields left zero.
const (
	DefaultSkew            = 60 * time.Second
	DefaultMaxTokenSize    = 16 << 10
	DefaultRefreshCooldown = 30 * time.Second
	DefaultRefreshInterval = time.Hour
	DefaultFetchTimeout    = 10 * time.Second
	// MaxJWKSSize bounds a discovery document or JWKS response.
	MaxJWKSSize = 1 << 20
	// MaxIndexedClaim bounds the claims a lease keeps in indexed columns
	// (sub, jti, the job id, the repository or project), in bytes.
	MaxIndexedClaim = 1024
)

// Check names carried by VerifyError.Check.
const (
	CheckSize            = "size"
	CheckFormat          = "format"
	CheckAlgorithm       = "algorithm"
	CheckIssuer          = "issuer"
	CheckSignature       = "signature"
	CheckAudience        = "audience"
	CheckExpired         = "expired"
	CheckNotYetValid     = "not_yet_valid"
	CheckIssuedInFuture  = "issued_in_future"
	CheckMissingClaim    = "missing_claim"
	CheckKeysUnavailable = "keys_unavailable"
	CheckReplay          = "replay"
)

// IssuerConfig is one trusted OIDC issuer.
type IssuerConfig struct {
	// Name is the policy's name for the issuer; it becomes Identity.Issuer.
	Name string
	// URL is the exact expected `iss` (no normalisation: a trailing slash or
	// http instead of https is a different issuer).
	URL string
	// Audience must be one of the token's `aud` values. A token with
	// several audiences is accepted only when its `azp` is Audience (OIDC
	// Core §3.1.3.7), unless AllowMultipleAudiences.
	Audience string
	// AllowMultipleAudiences accepts a token whose `aud` holds Audience
	// among others whatever its `azp` says: for an issuer known to mint
	// such tokens for its own reasons. Off by default: a token minted for
	// another party as well is that party's to use.
	AllowMultipleAudiences bool
	// JWKSURL is where the keys are; "" means OIDC discovery at
	// URL + "/.well-known/openid-configuration".
	JWKSURL string
	// Algorithms are the accepted `alg` values; empty means [RS256].
	// "none" and HS* are never accepted, whatever is listed here.
	Algorithms []string
}

// Options configure a Verifier; zero fields take the defaults above.
type Options struct {
	// HTTPClient fetches discovery documents and JWKS. Its CheckRedirect is
	// replaced by one that refuses redirects to another host.
	HTTPClient *http.Client
	// Skew is the clock tolerance for exp, nbf and iat (default 60 s).
	Skew time.Duration
	// MaxTokenSize caps an ID token before it is parsed (default 16 KiB).
	MaxTokenSize int
	// RefreshCooldown is the least time between two JWKS fetches for one
	// issuer (default 30 s): a flood of unknown kids causes at most one
	// fetch per cooldown.
	RefreshCooldown time.Duration
	// RefreshInterval is how old cached keys may get before a background
	// refresh is attempted (default 1 h). Stale keys keep working.
	RefreshInterval time.Duration
	// FetchTimeout bounds one discovery + JWKS fetch (default 10 s).
	FetchTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Identity is what a verified ID token says about the job.
type Identity struct {
	// Issuer is the configured name of the issuer (IssuerConfig.Name).
	Issuer string
	// IssuerURL is the token's `iss`.
	IssuerURL string
	Subject   string
	JTI       string
	// Claims holds every top-level claim as a string: strings as they are,
	// numbers as their exact JSON text (4242.0 stays "4242.0", never "4242":
	// a pinned number matches only the literal the issuer wrote), booleans
	// "true"/"false", objects and arrays as compact JSON; null claims are
	// left out.
	Claims    map[string]string
	IssuedAt  time.Time
	Expiry    time.Time
	Audience  []string
	Algorithm string
	KeyID     string
}

// VerifyError says which check refused a token. It never contains the token.
type VerifyError struct {
	Check  string
	Reason string
}

func (e *VerifyError) Error() string { return e.Check + ": " + e.Reason }

func verr(check, format string, args ...any) error {
	return &VerifyError{Check: check, Reason: fmt.Sprintf(format, args...)}
}

// CheckOf returns the failed check of a VerifyError in err's chain, or "".
func CheckOf(err error) string {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Check
	}
	return ""
}

// supportedAlgs are the only algorithms this package will ever accept.
var supportedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// SupportedAlgorithm reports whether alg may appear in IssuerConfig.Algorithms.
func SupportedAlgorithm(alg string) bool {
	return slices.Contains(supportedAlgs, jose.SignatureAlgorithm(alg))
}

// Verifier verifies ID tokens against a hot-swappable set of issuers. It is
// safe for concurrent use.
type Verifier struct {
	opts   Options
	client *http.Client

	setMu  sync.Mutex // serialises SetIssuers
	issuer atomic.Pointer[issuerTable]
}

type issuerTable struct {
	byURL map[string]*issuerGroup
}

// issuerGroup is every config sharing one `iss` (e.g. two names with
// different audiences); they share one key cache.
type issuerGroup struct {
	url     string
	entries []issuerEntry
	keys    *keySource
}

type issuerEntry struct {
	name      string
	audience  string
	algs      []string
	multiAuds bool // AllowMultipleAudiences
}

func (g *issuerGroup) allows(alg string) bool {
	for _, e := range g.entries {
		if slices.Contains(e.algs, alg) {
			return true
		}
	}
	return false
}

// NewVerifier returns a Verifier with no issuers; call SetIssuers.
func NewVerifier(opts Options) *Verifier {
	if opts.Skew <= 0 {
		opts.Skew = DefaultSkew
	}
	if opts.MaxTokenSize <= 0 {
		opts.MaxTokenSize = DefaultMaxTokenSize
	}
	if opts.RefreshCooldown <= 0 {
		opts.RefreshCooldown = DefaultRefreshCooldown
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var c http.Client
	if opts.HTTPClient != nil {
		c = *opts.HTTPClient
	} else {
		c.Timeout = opts.FetchTimeout
	}
	c.CheckRedirect = sameHostRedirect
	v := &Verifier{opts: opts, client: &c}
	v.issuer.Store(&issuerTable{byURL: map[string]*issuerGroup{}})
	return v
}

// SetIssuers replaces the trusted issuers (e.g. on a policy reload). Key
// caches of issuers whose URL and JWKS URL are unchanged are kept. Configs
// are used as given: invalid algorithms are dropped (an issuer left with none
// accepts nothing), and a config whose URL repeats an earlier one with a
// different JWKSURL is ignored (one key source per URL). The policy refuses
// both mistakes with their file and line; IssuerOf drops what this drops.
func (v *Verifier) SetIssuers(cfgs []IssuerConfig) {
	v.setMu.Lock()
	defer v.setMu.Unlock()
	old := v.issuer.Load()
	next := &issuerTable{byURL: make(map[string]*issuerGroup, len(cfgs))}
	for _, c := range cfgs {
		algs := effectiveAlgs(c.Algorithms)
		g := next.byURL[c.URL]
		if g == nil {
			var ks *keySource
			if og := old.byURL[c.URL]; og != nil && og.keys.jwksURL == c.JWKSURL {
				ks = og.keys
			} else {
				ks = &keySource{issuerURL: c.URL, jwksURL: c.JWKSURL}
			}
			g = &issuerGroup{url: c.URL, keys: ks}
			next.byURL[c.URL] = g
		} else if g.keys.jwksURL != c.JWKSURL {
			continue
		}
		g.entries = append(g.entries, issuerEntry{name: c.Name, audience: c.Audience, algs: algs, multiAuds: c.AllowMultipleAudiences})
	}
	v.issuer.Store(next)
}

func effectiveAlgs(in []string) []string {
	if len(in) == 0 {
		return []string{string(jose.RS256)}
	}
	out := make([]string, 0, len(in))
	for _, a := range in {
		if SupportedAlgorithm(a) {
			out = append(out, a)
		}
	}
	return out
}

// Verify checks rawIDToken and returns the identity it proves. It does not
// consume the token's jti: call ConsumeJTI once the exchange goes ahead.
// Every refusal is a *VerifyError.
func (v *Verifier) Verify(ctx context.Context, rawIDToken string) (*Identity, error) {
	jws, err := parseJWS(rawIDToken, v.opts.MaxTokenSize)
	if err != nil {
		return nil, err
	}
	hdr := jws.Signatures[0].Header
	alg := hdr.Algorithm

	// Route by the unverified iss; it is re-read below from the same,
	// then verified, bytes.
	payload := jws.UnsafePayloadWithoutVerification()
	claims, err := decodeClaims(payload)
	if err != nil {
		return nil, err
	}
	iss, err := issuerClaim(claims)
	if err != nil {
		return nil, err
	}
	g := v.issuer.Load().byURL[iss]
	if g == nil {
		return nil, verr(CheckIssuer, "issuer %s is not trusted", quote(iss))
	}
	if !g.allows(alg) {
		return nil, verr(CheckAlgorithm, "algorithm %s is not accepted for issuer %s", quote(alg), quote(iss))
	}

	keys, err := v.keysFor(ctx, g.keys, hdr.KeyID, alg)
	if err != nil {
		return nil, err
	}
	verified := false
	for i := range keys {
		if _, err := jws.Verify(keys[i].Key); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, verr(CheckSignature, "signature does not verify with the issuer's key")
	}

	return v.checkClaims(g, alg, hdr.KeyID, claims)
}

func (v *Verifier) checkClaims(g *issuerGroup, alg, kid string, claims map[string]any) (*Identity, error) {
	now := v.opts.Now()
	skew := v.opts.Skew

	tc, err := readClaims(claims)
	if err != nil {
		return nil, err
	}
	entry, err := pickEntry(g.entries, alg, tc.aud, tc.azp)
	if err != nil {
		return nil, err
	}

	if !now.Before(tc.exp.Add(skew)) {
		return nil, verr(CheckExpired, "expired at %s (now %s, skew %s)", tc.exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}
	if !tc.nbf.IsZero() && tc.nbf.After(now.Add(skew)) {
		return nil, verr(CheckNotYetValid, "not valid before %s (now %s, skew %s)", tc.nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}
	if tc.iat.After(now.Add(skew)) {
		return nil, verr(CheckIssuedInFuture, "issued at %s (now %s, skew %s)", tc.iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew)
	}

	out := make(map[string]string, len(claims))
	for k, c := range claims {
		if s, ok := claimString(c); ok {
			out[k] = s
		}
	}
	return &Identity{
		Issuer:    entry.name,
		IssuerURL: g.url,
		Subject:   tc.sub,
		JTI:       tc.jti,
		Claims:    out,
		IssuedAt:  tc.iat,
		Expiry:    tc.exp,
		Audience:  tc.aud,
		Algorithm: alg,
		KeyID:     kid,
	}, nil
}

// issuerClaim reads iss, which routes a token to its issuer.
func issuerClaim(claims map[string]any) (string, error) {
	iss, ok := claims["iss"].(string)
	if !ok || iss == "" {
		if _, present := claims["iss"]; present {
			return "", verr(CheckFormat, "iss is not a string")
		}
		return "", verr(CheckMissingClaim, "iss is missing")
	}
	return iss, nil
}

// registered is the registered claims Verify reads besides iss.
type registered struct {
	sub, jti, azp string
	aud           []string
	exp, iat, nbf time.Time // nbf zero when absent
}

// readClaims checks the format of the registered claims: sub, aud, exp and
// iat present, nbf, jti and azp optional, each of its type. Verify and
// DecodeUnverified both run it, so that `policy test` refuses a token the
// server would refuse for its shape whoever signed it.
func readClaims(claims map[string]any) (*registered, error) {
	for _, name := range []string{"sub", "aud", "exp", "iat"} {
		if c, ok := claims[name]; !ok || c == nil {
			return nil, verr(CheckMissingClaim, "%s is missing", name)
		}
	}
	var r registered
	var ok bool
	var err error
	if r.sub, ok = claims["sub"].(string); !ok || r.sub == "" {
		return nil, verr(CheckFormat, "sub is not a non-empty string")
	}
	if r.aud, err = audience(claims["aud"]); err != nil {
		return nil, err
	}
	if r.exp, ok = numericDate(claims["exp"]); !ok {
		return nil, verr(CheckFormat, "exp is not a numeric date")
	}
	if r.iat, ok = numericDate(claims["iat"]); !ok {
		return nil, verr(CheckFormat, "iat is not a numeric date")
	}
	if c, present := claims["nbf"]; present && c != nil {
		if r.nbf, ok = numericDate(c); !ok {
			return nil, verr(CheckFormat, "nbf is not a numeric date")
		}
	}
	if c, present := claims["jti"]; present && c != nil {
		if r.jti, ok = c.(string); !ok {
			return nil, verr(CheckFormat, "jti is not a string")
		}
	}
	if c, present := claims["azp"]; present && c != nil {
		if r.azp, ok = c.(string); !ok {
			return nil, verr(CheckFormat, "azp is not a string")
		}
	}
	// Every claim reaches the lease (sub, the job id, the claims) and policy
	// matching: PostgreSQL cannot store a NUL or invalid UTF-8 where SQLite
	// can, so such a token is refused here and both backends decide alike.
	// The names are sorted only for a refusal, to name its first claim
	// whatever the map's order: sorting every token's names cost an
	// allocation a claim.
	for name, c := range claims {
		if plainText(name) && plainClaim(c) {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(claims)) {
			if !plainText(name) || !plainClaim(claims[name]) {
				return nil, verr(CheckFormat, "claim %s holds a NUL character or invalid UTF-8", quote(name))
			}
		}
	}
	// The claims a lease keeps in indexed columns (its subject, its job id
	// (JobID), its repository or project, the jti recorded once):
	// PostgreSQL cannot index a text of much over 2.7 kB where SQLite can,
	// so a longer one is refused here and both backends decide alike.
	for _, name := range [...]string{"sub", "jti", "job_id", "run_id", "pipeline_id", "repository", "project_path"} {
		if s, ok := claimString(claims[name]); ok && len(s) > MaxIndexedClaim {
			return nil, verr(CheckFormat, "claim %s is %d bytes, more than %d", quote(name), len(s), MaxIndexedClaim)
		}
	}
	return &r, nil
}

// plainClaim reports whether every string in c, at any depth and object
// keys included, is plainText.
func plainClaim(c any) bool {
	switch x := c.(type) {
	case string:
		return plainText(x)
	case []any:
		for _, v := range x {
			if !plainClaim(v) {
				return false
			}
		}
	case map[string]any:
		for k, v := range x {
			if !plainText(k) || !plainClaim(v) {
				return false
			}
		}
	}
	return true
}

// plainText reports whether s is valid UTF-8 without a NUL.
func plainText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func decodeClaims(payload []byte) (map[string]any, error) {
	if claims, ok := flatClaims(payload); ok {
		return claims, nil
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, verr(CheckFormat, "claims are not a JSON object")
	}
	// Only white space may follow (dec.More says false of a stray "}" or
	// "]", which a JSON parser elsewhere refuses: the token would be read
	// two ways).
	if len(bytes.TrimLeft(payload[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, verr(CheckFormat, "trailing data after the claims")
	}
	return claims, nil
}

// pickEntry picks the config a token is for: the first (in configuration
// order) whose audience it carries and whose algorithms include alg. A
// token for several audiences is for us only when its authorized party is
// (OIDC Core §3.1.3.7), or the issuer's config says such tokens are.
func pickEntry(entries []issuerEntry, alg string, aud []string, azp string) (*issuerEntry, error) {
	multi := distinct(aud) > 1
	refusedForAzp := false
	for i := range entries {
		e := &entries[i]
		if !slices.Contains(e.algs, alg) || !slices.Contains(aud, e.audience) {
			continue
		}
		if multi && !e.multiAuds && azp != e.audience {
			refusedForAzp = true
			continue
		}
		return e, nil
	}
	if refusedForAzp {
		return nil, verr(CheckAudience, "aud holds several audiences and azp is not the configured audience")
	}
	return nil, verr(CheckAudience, "aud does not contain the configured audience")
}

// distinct counts the different values of aud.
func distinct(aud []string) int {
	n := 0
	for i, a := range aud {
		if !slices.Contains(aud[:i], a) {
			n++
		}
	}
	return n
}

func audience(c any) ([]string, error) {
	switch a := c.(type) {
	case string:
		return []string{a}, nil
	case []any:
		out := make([]string, 0, len(a))
		for _, x := range a {
			s, ok := x.(string)
			if !ok {
				return nil, verr(CheckFormat, "aud holds a non-string")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, verr(CheckFormat, "aud is neither a string nor an array of strings")
}

// numericDate reads a JSON number of seconds since the epoch.
func numericDate(c any) (time.Time, bool) {
	n, ok := c.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || math.Abs(f) > 1e13 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// claimString turns a decoded claim into its string form; ok is false for
// null. Numbers keep their exact JSON text (json.Number, at any depth):
// reading them as floats would let 4242.0000000000001 pass for 4242.
func claimString(c any) (string, bool) {
	switch x := c.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		return string(x), true
	default:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(x); err != nil {
			return "", false
		}
		return strings.TrimSuffix(b.String(), "\n"), true
	}
}

// quote prints an untrusted value for an error: quoted, and cut to 100 bytes.
func quote(s string) string {
	if c := token.Clip(s, 100); len(c) < len(s) {
		s = c + "…" // never inside a credential: cut in its checksum, redaction would miss it
	}
	return strconv.Quote(s)
}

// parseJWS splits a compact JWS of at most max bytes with exactly one
// signature, naming what is wrong without quoting the token.
func parseJWS(raw string, max int) (*jose.JSONWebSignature, error) {
	if len(raw) > max {
		return nil, verr(CheckSize, "token is %d bytes, more than %d", len(raw), max)
	}
	if raw == "" {
		return nil, verr(CheckFormat, "empty token")
	}
	jws, err := jose.ParseSignedCompact(raw, supportedAlgs)
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, verr(CheckAlgorithm, "algorithm %s is never accepted", quote(string(ua.Got)))
		}
		return nil, verr(CheckFormat, "not a compact JWS")
	}
	if len(jws.Signatures) != 1 {
		return nil, verr(CheckFormat, "want exactly one signature")
	}
	return jws, nil
}
