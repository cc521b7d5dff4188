// Package githubtest is a GitHub API double for tests and the demo: the
// App endpoints mayfly uses (GET /app/installations, POST
// /app/installations/{id}/access_tokens, DELETE /installation/token) and a
// catch-all repository API that accepts only live installation tokens. It
// checks what GitHub checks: the App JWT's RS256 signature against the
// App's public key, iss = the App id, iat not in the future and exp no more
// than 10 minutes ahead; requested permissions by GitHub's names and levels
// and within what the installation was granted (else 422); repositories
// within the installation (else 422). It rate-limits as GitHub does on
// demand: a primary limit (403, x-ratelimit-remaining: 0,
// x-ratelimit-reset) and a secondary one (429 with retry-after). It issues
// installation tokens in the form GitHub mints since its 2026 rollout,
// stateless ("ghs_" + the App's id + "_" + a JWT the double signs), or the
// classic 40-character checksummed form (Options.Classic), and honours
// GitHub's per-request override (X-GitHub-Stateless-S2S-Token: enabled or
// disabled).
//
// Reflecting is a broken API instead: its malformed answers quote the
// credential a caller sent.
//
// It listens on 127.0.0.1 only. It is a double of an outside service: it
// never holds a real credential.
package githubtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Installation is one installation of the App.
type Installation struct {
	ID           int64
	Owner        string
	Repositories []string          // names the installation may reach
	Permissions  map[string]string // what the owner granted the App
}

// Options configure a Server.
type Options struct {
	AppID         string // default "123456"
	Installations []Installation
	Now           func() time.Time
	TokenTTL      time.Duration // default 1h, as GitHub
	// Classic issues 40-character checksummed tokens (GitHub's form before
	// 2026) unless a request asks otherwise; default: stateless tokens.
	Classic bool
	// WidePermissions and WideRepositories make the double answer a token
	// request with more than it asked for (the installation's every
	// permission; every repository, "repository_selection": "all"), as a
	// misbehaving or impersonated API would.
	WidePermissions, WideRepositories bool
}

// Token is an installation token the double issued.
type Token struct {
	Installation int64
	Permissions  map[string]string
	Repositories []string
	ExpiresAt    time.Time
	Deleted      bool
}

// Server is a running double.
type Server struct {
	URL        string // http://127.0.0.1:port
	AppID      string
	PrivateKey []byte // the App's PEM private key (PKCS#1), to store as a secret

	opts   Options
	pub    *rsa.PublicKey
	issuer jose.Signer // signs stateless tokens (GitHub's own issuer)
	srv    *http.Server
	ln     net.Listener

	mu        sync.Mutex
	tokens    map[string]*Token
	primary   time.Time // rate-limited until (primary limit)
	secondary int       // the next n requests get a secondary limit
	retry     int       // retry-after seconds of the secondary limit
	down      bool
	calls     map[string]int // "METHOD /path-pattern" → count
	refused   []string       // why requests were refused, in order
}

// Start runs a double on a loopback port until Close.
func Start(opts Options) (*Server, error) {
	if opts.AppID == "" {
		opts.AppID = "123456"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ik, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	issuer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ik}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), AppID: opts.AppID, opts: opts, pub: &key.PublicKey, issuer: issuer, ln: ln,
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		tokens:     map[string]*Token{}, calls: map[string]int{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the double.
func (s *Server) Close() error { return s.srv.Close() }

// LimitPrimary answers every request with GitHub's primary rate limit
// until t.
func (s *Server) LimitPrimary(until time.Time) {
	s.mu.Lock()
	s.primary = until
	s.mu.Unlock()
}

// LimitSecondary answers the next n requests with GitHub's secondary rate
// limit: 429 and retry-after, or, when retryAfter is negative, 403 with
// neither retry-after nor x-ratelimit-remaining: 0 (GitHub's docs: then
// wait at least a minute).
func (s *Server) LimitSecondary(n, retryAfter int) {
	s.mu.Lock()
	s.secondary, s.retry = n, retryAfter
	s.mu.Unlock()
}

// Down makes every request fail with 503 (GitHub down) until Down(false).
func (s *Server) Down(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Calls returns how many requests reached an endpoint, e.g.
// "POST /app/installations/{id}/access_tokens".
func (s *Server) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// Refused lists why requests were refused.
func (s *Server) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.refused)
}

// Tokens returns a copy of every token issued, by value.
func (s *Server) Tokens() map[string]Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Token, len(s.tokens))
	for k, v := range s.tokens {
		out[k] = *v
	}
	return out
}

// Live reports whether tok is an issued, undeleted, unexpired token.
func (s *Server) Live(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	return t != nil && !t.Deleted && s.opts.Now().Before(t.ExpiresAt)
}

// LiveCount is how many issued tokens are live.
func (s *Server) LiveCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tokens {
		if !t.Deleted && s.opts.Now().Before(t.ExpiresAt) {
			n++
		}
	}
	return n
}

func (s *Server) fail(w http.ResponseWriter, status int, msg, why string) {
	s.refused = append(s.refused, why)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	switch {
	case s.down:
		s.fail(w, http.StatusServiceUnavailable, "Service Unavailable", "down")
		return
	case now.Before(s.primary):
		w.Header().Set("X-Ratelimit-Limit", "5000")
		w.Header().Set("X-Ratelimit-Remaining", "0")
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(s.primary.Unix(), 10))
		s.fail(w, http.StatusForbidden, "API rate limit exceeded", "primary rate limit")
		return
	case s.secondary > 0:
		s.secondary--
		w.Header().Set("X-Ratelimit-Remaining", "4999")
		if s.retry < 0 {
			s.fail(w, http.StatusForbidden, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "secondary rate limit")
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(s.retry))
		s.fail(w, http.StatusTooManyRequests, "You have exceeded a secondary rate limit.", "secondary rate limit")
		return
	}
	w.Header().Set("X-Ratelimit-Remaining", "4999")
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && path == "/app/installations":
		s.calls["GET /app/installations"]++
		if !s.appAuth(w, r) {
			return
		}
		var out []map[string]any
		for _, in := range s.opts.Installations {
			out = append(out, map[string]any{"id": in.ID, "account": map[string]any{"login": in.Owner}, "permissions": in.Permissions})
		}
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodPost && strings.HasPrefix(path, "/app/installations/") && strings.HasSuffix(path, "/access_tokens"):
		s.calls["POST /app/installations/{id}/access_tokens"]++
		if !s.appAuth(w, r) {
			return
		}
		s.accessToken(w, r, strings.TrimSuffix(strings.TrimPrefix(path, "/app/installations/"), "/access_tokens"))
	case r.Method == http.MethodDelete && path == "/installation/token":
		s.calls["DELETE /installation/token"]++
		t := s.tokenAuth(r)
		if t == nil {
			s.fail(w, http.StatusUnauthorized, "Bad credentials", "delete with a token that is not live")
			return
		}
		t.Deleted = true
		w.WriteHeader(http.StatusNoContent)
	default:
		s.calls["API"]++
		t := s.tokenAuth(r)
		if t == nil {
			s.fail(w, http.StatusUnauthorized, "Bad credentials", "API call without a live installation token")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"installation": t.Installation, "method": r.Method, "path": path})
	}
}

// tokenAuth finds the live token of "Authorization: token|Bearer X".
func (s *Server) tokenAuth(r *http.Request) *Token {
	a := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(a, " ")
	if !ok || (!strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "bearer")) {
		return nil
	}
	t := s.tokens[tok]
	if t == nil || t.Deleted || !s.opts.Now().Before(t.ExpiresAt) {
		return nil
	}
	return t
}

// appAuth verifies the App JWT as GitHub does.
func (s *Server) appAuth(w http.ResponseWriter, r *http.Request) bool {
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		s.fail(w, http.StatusUnauthorized, "A JSON web token could not be decoded", "no bearer JWT")
		return false
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		s.fail(w, http.StatusUnauthorized, "A JSON web token could not be decoded", "JWT does not parse: "+err.Error())
		return false
	}
	var c jwt.Claims
	if err := tok.Claims(s.pub, &c); err != nil {
		s.fail(w, http.StatusUnauthorized, "A JSON web token could not be decoded", "JWT signature: "+err.Error())
		return false
	}
	now := s.opts.Now()
	switch {
	case c.Issuer != s.AppID:
		s.fail(w, http.StatusUnauthorized, "Integration not found", fmt.Sprintf("iss %q is not the App %s", c.Issuer, s.AppID))
	case c.IssuedAt == nil || c.IssuedAt.Time().After(now.Add(time.Second)):
		s.fail(w, http.StatusUnauthorized, "'Issued at' claim ('iat') must be an Integer representing a time in the past", "iat missing or in the future")
	case c.Expiry == nil || !c.Expiry.Time().After(now):
		s.fail(w, http.StatusUnauthorized, "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires", "exp missing or past")
	case c.Expiry.Time().After(now.Add(10*time.Minute + time.Second)):
		s.fail(w, http.StatusUnauthorized, "'Expiration time' claim ('exp') is too far in the future", "exp more than 10 minutes ahead")
	default:
		return true
	}
	return false
}

func (s *Server) accessToken(w http.ResponseWriter, r *http.Request, idText string) {
	id, err := strconv.ParseInt(idText, 10, 64)
	var in *Installation
	for i := range s.opts.Installations {
		if s.opts.Installations[i].ID == id && err == nil {
			in = &s.opts.Installations[i]
		}
	}
	if in == nil {
		s.fail(w, http.StatusNotFound, "Not Found", "unknown installation "+idText)
		return
	}
	var body struct {
		Repositories  []string          `json:"repositories"`
		RepositoryIDs []int64           `json:"repository_ids"`
		Permissions   map[string]string `json:"permissions"`
	}
	if r.ContentLength != 0 {
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			s.fail(w, http.StatusUnprocessableEntity, "Invalid request.", "body: "+err.Error())
			return
		}
	}
	perms := map[string]string{}
	for p, lv := range body.Permissions {
		levels := policy.GitHubPermissionLevels(p)
		if levels == nil || !slices.Contains(levels, lv) {
			s.fail(w, http.StatusUnprocessableEntity, "Invalid request.\n\n"+p+" is not a valid permission.", "unknown permission "+p+": "+lv)
			return
		}
		granted, ok := in.Permissions[p]
		if !ok || rankLevel(lv) > rankLevel(granted) {
			s.fail(w, http.StatusUnprocessableEntity, "The permissions requested are not granted to this installation.", "permission not granted: "+p+": "+lv)
			return
		}
		perms[p] = lv
	}
	if len(body.Permissions) == 0 {
		for p, lv := range in.Permissions {
			perms[p] = lv
		}
	}
	for _, repo := range body.Repositories {
		if !slices.Contains(in.Repositories, repo) {
			s.fail(w, http.StatusUnprocessableEntity, "There is at least one repository that does not exist or is not accessible to the parent installation.", "repository not in the installation: "+repo)
			return
		}
	}
	repos := body.Repositories
	selection := "selected"
	if len(repos) == 0 || s.opts.WideRepositories {
		repos, selection = in.Repositories, "all"
	}
	if s.opts.WidePermissions {
		maps.Copy(perms, in.Permissions)
	}
	perms["metadata"] = "read"
	exp := s.opts.Now().Add(s.opts.TokenTTL).UTC().Truncate(time.Second)
	stateless := !s.opts.Classic
	switch r.Header.Get("X-GitHub-Stateless-S2S-Token") { // GitHub ignores other values
	case "enabled":
		stateless = true
	case "disabled":
		stateless = false
	}
	tok := classicToken()
	if stateless {
		if tok, err = s.statelessToken(in, perms, repos, exp); err != nil {
			s.fail(w, http.StatusInternalServerError, "Server Error", "signing a stateless token: "+err.Error())
			return
		}
	}
	s.tokens[tok] = &Token{Installation: in.ID, Permissions: perms, Repositories: repos, ExpiresAt: exp}
	var rs []map[string]any
	for _, n := range repos {
		rs = append(rs, map[string]any{"name": n, "full_name": in.Owner + "/" + n})
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "expires_at": exp.Format(time.RFC3339), "permissions": perms,
		"repository_selection": selection, "repositories": rs})
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// classicToken is "ghs_" + 30 base62 + their base62 CRC-32 (40 characters).
func classicToken() string {
	body30 := make([]byte, 30)
	for i := range body30 {
		var b [1]byte
		for {
			rand.Read(b[:])
			if int(b[0]) < 248 { // 62*4: no modulo bias
				break
			}
		}
		body30[i] = base62[int(b[0])%62]
	}
	return "ghs_" + string(body30) + token.Checksum(string(body30))
}

// statelessToken is "ghs_" + the App's id + "_" + a JWT signed by the
// double's own issuer naming the installation, the App and the token's
// scope, as GitHub's stateless tokens do (their length varies with it).
func (s *Server) statelessToken(in *Installation, perms map[string]string, repos []string, exp time.Time) (string, error) {
	now := s.opts.Now()
	c := jwt.Claims{Issuer: "githubtest", ID: rand.Text(), IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp)}
	extra := map[string]any{"installation_id": in.ID, "app_id": s.AppID, "permissions": perms, "repositories": repos}
	out, err := jwt.Signed(s.issuer).Claims(c).Claims(extra).Serialize()
	if err != nil {
		return "", err
	}
	return "ghs_" + s.AppID + "_" + out, nil
}

func rankLevel(l string) int {
	switch l {
	case "read":
		return 1
	case "write":
		return 2
	case "admin":
		return 3
	}
	return 99
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
