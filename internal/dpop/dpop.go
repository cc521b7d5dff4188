// Package dpop verifies RFC 9449 DPoP proofs: at token exchange (where the
// issued token gets bound to the proof key's RFC 7638 thumbprint) and at the
// gateway on every call to a key-bound token. It owns proof parsing and
// checking and the replay cache of proof jtis.
//
// It never decides what a caller may do, never stores or logs a proof or an
// access token (errors name the failed check only), and never accepts a
// symmetric or unsigned proof.
package dpop

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/jwa"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Defaults for Options fields left zero.
const (
	DefaultWindow          = 60 * time.Second
	DefaultReplayCacheSize = 100_000
	DefaultMaxProofSize    = 8 << 10
	// MaxJTILength bounds a proof's jti.
	MaxJTILength = 256
	// TokenType is the required "typ" header of a proof.
	TokenType = "dpop+jwt"
)

// Check names carried by Error.Check.
const (
	CheckSize            = "size"
	CheckFormat          = "format"
	CheckType            = "typ"
	CheckAlgorithm       = "algorithm"
	CheckJWK             = "jwk"
	CheckSignature       = "signature"
	CheckMethod          = "htm"
	CheckURL             = "htu"
	CheckIssuedAt        = "iat"
	CheckJTI             = "jti"
	CheckReplay          = "replay"
	CheckReplayCacheFull = "replay_cache_full"
	CheckAccessTokenHash = "ath"
	CheckThumbprint      = "thumbprint"
)

// defaultAlgorithms are accepted when Options.Algorithms is empty (read-only).
var defaultAlgorithms = []string{"ES256", "RS256", "PS256", "EdDSA"}

// supported are the only algorithms ever accepted, whatever Options say.
var supported = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Options configure a Verifier; zero fields take the defaults.
type Options struct {
	// Window is how far a proof's iat may be from now, either way
	// (default 60 s). A proof's jti is remembered for as long.
	Window time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Algorithms are the accepted proof algorithms (default
	// ES256, RS256, PS256, EdDSA). Anything not asymmetric is ignored.
	Algorithms []string
	// ReplayCacheSize bounds the remembered jtis (default 100 000). When
	// it is full of unexpired jtis new proofs are refused
	// (CheckReplayCacheFull) rather than risking a replay.
	ReplayCacheSize int
	// MaxProofSize caps a proof before parsing (default 8 KiB).
	MaxProofSize int
	// Shared, when set, also remembers each proof's jti, so that a proof
	// is refused when replayed on another node or after a restart (the
	// local cache only knows this process).
	Shared SharedReplay
}

// SharedReplay remembers proof jtis across nodes and restarts
// (*store.DB): fresh is true for the first use of a jti only, until it
// expires.
type SharedReplay interface {
	UseJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error)
}

// sharedIssuer namespaces proof jtis in the shared store: it is not a URL,
// so it never meets an ID-token issuer's jtis.
const sharedIssuer = "dpop-proof"

// Proof is a verified DPoP proof.
type Proof struct {
	// Thumbprint is the RFC 7638 SHA-256 thumbprint of the proof key,
	// base64url without padding: the value a token is bound to (cnf.jkt).
	Thumbprint string
	JTI        string
	HTM        string
	HTU        string
	IssuedAt   time.Time

	key     [32]byte  // replay-cache key of (thumbprint, jti)
	expires time.Time // when the jti may be forgotten: iat + window
}

// Error says which check refused a proof. It never contains the proof or
// the access token.
type Error struct {
	Check  string
	Reason string
}

func (e *Error) Error() string { return e.Check + ": " + e.Reason }

func fail(check, format string, args ...any) error {
	return &Error{Check: check, Reason: fmt.Sprintf(format, args...)}
}

// CheckOf returns the failed check of an *Error in err's chain, or "".
func CheckOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Check
	}
	return ""
}

// Verifier checks DPoP proofs. It is safe for concurrent use.
type Verifier struct {
	window  time.Duration
	now     func() time.Time
	algs    []jose.SignatureAlgorithm
	maxSize int
	replay  *replayCache
	shared  SharedReplay
}

// NewVerifier returns a Verifier with its own replay cache.
func NewVerifier(opts Options) *Verifier {
	v := &Verifier{window: opts.Window, now: opts.Now, maxSize: opts.MaxProofSize, shared: opts.Shared}
	if v.window <= 0 {
		v.window = DefaultWindow
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.maxSize <= 0 {
		v.maxSize = DefaultMaxProofSize
	}
	algs := opts.Algorithms
	if len(algs) == 0 {
		algs = defaultAlgorithms
	}
	for _, a := range algs {
		if slices.Contains(supported, a) && !slices.Contains(v.algs, jose.SignatureAlgorithm(a)) {
			v.algs = append(v.algs, jose.SignatureAlgorithm(a))
		}
	}
	size := opts.ReplayCacheSize
	if size <= 0 {
		size = DefaultReplayCacheSize
	}
	v.replay = newReplayCache(size)
	return v
}

// Verify checks proofJWT for a request with method and requestURL (a "#"
// in it is taken as a character, not a fragment). accessToken is
// "" at token exchange; otherwise the proof's ath must be its hash.
// wantThumbprint is "" at exchange; otherwise the proof key's thumbprint must
// equal it. The jti is recorded only when every other check passed. Every
// refusal is an *Error; an error wrapping failclosed.ErrUnavailable means the shared
// replay store could not be asked.
func (v *Verifier) Verify(proofJWT, method, requestURL, accessToken, wantThumbprint string) (*Proof, error) {
	return v.VerifyContext(context.Background(), proofJWT, method, requestURL, accessToken, wantThumbprint)
}

// VerifyContext is Verify with a context for the shared replay store: Check
// then Record.
func (v *Verifier) VerifyContext(ctx context.Context, proofJWT, method, requestURL, accessToken, wantThumbprint string) (*Proof, error) {
	p, err := v.Check(proofJWT, method, requestURL, accessToken, wantThumbprint)
	if err != nil {
		return nil, err
	}
	if err := v.Record(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Check is Verify without recording the jti: a proof it accepts is not yet
// spent, and must go through Record before whatever it authorizes is done.
// The token exchange checks first and records only once the ID token has
// verified, so that exchanges nobody is entitled to cannot fill the
// replay cache.
func (v *Verifier) Check(proofJWT, method, requestURL, accessToken, wantThumbprint string) (*Proof, error) {
	if len(proofJWT) > v.maxSize {
		return nil, fail(CheckSize, "proof is %d bytes, more than %d", len(proofJWT), v.maxSize)
	}
	if proofJWT == "" {
		return nil, fail(CheckFormat, "empty proof")
	}
	jws, err := jose.ParseSignedCompact(proofJWT, v.algs)
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, fail(CheckAlgorithm, "algorithm %s is not accepted", quote(string(ua.Got)))
		}
		if headerHasPrivateJWK(proofJWT) {
			return nil, fail(CheckJWK, "jwk header holds private key material")
		}
		return nil, fail(CheckFormat, "not a compact JWS")
	}
	if len(jws.Signatures) != 1 {
		return nil, fail(CheckFormat, "want exactly one signature")
	}
	hdr := jws.Signatures[0].Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, TokenType) {
		return nil, fail(CheckType, "typ must be %s", TokenType)
	}
	jwk := hdr.JSONWebKey
	if jwk == nil {
		return nil, fail(CheckJWK, "jwk header missing")
	}
	if !jwk.Valid() || !jwk.IsPublic() {
		return nil, fail(CheckJWK, "jwk header is not a public key")
	}
	if !jwa.KeyFits(jwk.Key, hdr.Algorithm) {
		return nil, fail(CheckJWK, "jwk header key does not fit algorithm %s", hdr.Algorithm)
	}
	payload, err := jws.Verify(jwk.Key)
	if err != nil {
		return nil, fail(CheckSignature, "signature does not verify with the jwk header key")
	}

	var c struct {
		JTI *string      `json:"jti"`
		HTM *string      `json:"htm"`
		HTU *string      `json:"htu"`
		IAT *json.Number `json:"iat"`
		ATH *string      `json:"ath"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	// Only white space may follow the object: dec.More says false of a
	// stray "}" or "]".
	if err := dec.Decode(&c); err != nil || len(bytes.TrimLeft(payload[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, fail(CheckFormat, "claims are not a JSON object of the expected types")
	}
	if c.JTI == nil || *c.JTI == "" || len(*c.JTI) > MaxJTILength {
		return nil, fail(CheckJTI, "jti missing, empty or longer than %d", MaxJTILength)
	}
	if c.HTM == nil || *c.HTM != method {
		return nil, fail(CheckMethod, "htm does not match the request method %s", quote(method))
	}
	if c.HTU == nil {
		return nil, fail(CheckURL, "htu missing")
	}
	// The request URL is what this server received, where a "#" can only
	// be a character of the path (a request line has no fragment, and Go's
	// server keeps a raw "#" in the path, which is forwarded so): read as
	// a fragment, it would let a proof for the path before it through.
	wantHTU, err := NormalizeHTU(strings.ReplaceAll(requestURL, "#", "%23"))
	if err != nil {
		return nil, fail(CheckURL, "request URL: %v", err)
	}
	gotHTU, err := NormalizeHTU(*c.HTU)
	if err != nil || gotHTU != wantHTU {
		return nil, fail(CheckURL, "htu does not match the request URL %s", quote(wantHTU))
	}
	if c.IAT == nil {
		return nil, fail(CheckIssuedAt, "iat missing")
	}
	iat, ok := numericDate(*c.IAT)
	if !ok {
		return nil, fail(CheckIssuedAt, "iat is not a numeric date")
	}
	now := v.now()
	if d := now.Sub(iat); d > v.window || d < -v.window {
		return nil, fail(CheckIssuedAt, "iat is %s from now, outside ±%s", d.Round(time.Second), v.window)
	}
	if accessToken != "" {
		want := AccessTokenHash(accessToken)
		if c.ATH == nil || subtle.ConstantTimeCompare([]byte(*c.ATH), []byte(want)) != 1 {
			return nil, fail(CheckAccessTokenHash, "ath missing or not the hash of the presented token")
		}
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fail(CheckJWK, "cannot compute the key thumbprint")
	}
	thumb := base64.RawURLEncoding.EncodeToString(tp)
	if wantThumbprint != "" && subtle.ConstantTimeCompare([]byte(thumb), []byte(wantThumbprint)) != 1 {
		return nil, fail(CheckThumbprint, "proof key is not the key the token is bound to")
	}

	return &Proof{Thumbprint: thumb, JTI: *c.JTI, HTM: *c.HTM, HTU: gotHTU, IssuedAt: iat,
		key: sha256.Sum256([]byte(thumb + "\x00" + *c.JTI)), expires: iat.Add(v.window)}, nil
}

// Record spends a proof Check accepted: it is refused (CheckReplay) when
// its jti was already recorded, here or, with a shared store, on any node.
// Recording is atomic, so of two uses of one proof at once only one
// succeeds.
func (v *Verifier) Record(ctx context.Context, p *Proof) error {
	if p == nil || p.key == ([32]byte{}) {
		return fail(CheckFormat, "not a checked proof")
	}
	now := v.now()
	// A proof whose window closed between Check and Record would be
	// forgotten at once, letting a second use of it in through.
	if now.After(p.expires) {
		return fail(CheckIssuedAt, "the proof expired before it could be recorded")
	}
	switch v.replay.add(p.key, p.expires.UnixNano(), now.UnixNano()) {
	case replaySeen:
		return fail(CheckReplay, "jti already used")
	case replayFull:
		// With a shared store, that is the record and the memory only
		// answers a replay without a round trip: full, it must not turn
		// honest proofs away. Without one, the memory is the only record,
		// and full refuses.
		if v.shared == nil {
			return fail(CheckReplayCacheFull, "too many recent proofs; try again shortly")
		}
	}
	if v.shared != nil {
		fresh, err := v.shared.UseJTI(ctx, sharedIssuer, hex.EncodeToString(p.key[:]), p.expires)
		if err != nil {
			return fmt.Errorf("dpop: replay check %w: %v", failclosed.ErrUnavailable, err)
		}
		if !fresh {
			return fail(CheckReplay, "jti already used")
		}
	}
	return nil
}

// AccessTokenHash is a proof's ath for token: base64url(SHA-256(token)).
func AccessTokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// NormalizeHTU reduces an http(s) URL to what htu comparison uses: scheme
// and host lowercased, default port dropped, empty path as "/", its
// percent-encoding normalised (RFC 3986 §6.2.2, as RFC 9449 §4.3 asks: a
// proxy in front may re-encode what the client signed), no query, fragment
// or user info.
func NormalizeHTU(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Host == "" || u.Opaque != "" {
		return "", errors.New("not an absolute http(s) URL")
	}
	if u.User != nil {
		return "", errors.New("user info not allowed")
	}
	host := strings.ToLower(u.Host)
	if scheme == "https" {
		host = strings.TrimSuffix(host, ":443")
	} else {
		host = strings.TrimSuffix(host, ":80")
	}
	path := normalizeEscapes(u.EscapedPath())
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// normalizeEscapes decodes the percent-encoded unreserved characters of an
// escaped path (ALPHA, DIGIT, "-", ".", "_", "~") and writes every other
// escape in upper case: two spellings of one URL compare equal.
func normalizeEscapes(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteByte(p[i])
			continue
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteString(strings.ToUpper(p[i+1 : i+3]))
		}
		i += 2
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func numericDate(n json.Number) (time.Time, bool) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || math.Abs(f) > 1e13 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// headerHasPrivateJWK looks into the (unverified) header for a jwk with
// private or symmetric key members, to name that check in the error.
func headerHasPrivateJWK(proof string) bool {
	h, _, ok := strings.Cut(proof, ".")
	if !ok {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return false
	}
	var hdr struct {
		JWK map[string]json.RawMessage `json:"jwk"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return false
	}
	for _, m := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, ok := hdr.JWK[m]; ok {
			return true
		}
	}
	return false
}

func quote(s string) string {
	if c := token.Clip(s, 100); len(c) < len(s) {
		s = c + "…" // never inside a credential: cut in its checksum, redaction would miss it
	}
	return strconv.Quote(s)
}
