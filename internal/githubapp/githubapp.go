// Package githubapp is the credential source of github_app upstreams (SPEC
// section 9): it signs the App's JWT (RS256 with go-jose: iss = app id, iat
// 60 s in the past, exp 9 minutes ahead), finds the installation by owner
// when the policy names no id, asks GitHub for an installation token scoped
// to the grant's repositories and permissions, and deletes a token when its
// lease ends. It honours GitHub's rate limits: after a primary limit (403,
// x-ratelimit-remaining: 0) or a secondary one (429 or 403 with
// retry-after; a 403 saying "rate limit" without it: a minute) it asks
// nothing more of that API until the stated time.
//
// It never writes a token or the App's private key into an error, log or
// the params it hands the mint manager, and it follows no redirect (a
// redirect could carry the App JWT or a token elsewhere).
package githubapp

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/netfail"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Secrets reveals stored secrets (the App's private key).
type Secrets interface {
	Reveal(ctx context.Context, name string) ([]byte, int, error)
}

// Config wires a Source.
type Config struct {
	Secrets Secrets
	// Client talks to GitHub; the default has a 30 s timeout. Redirects
	// are never followed, whatever the client says.
	Client *http.Client
	Now    func() time.Time
	// Policy returns the policy in force. A record whose fields are not
	// authenticated has its token sent only to the API its upstream has
	// there, never to the api_url the record names.
	Policy func() *policy.Policy
}

// Source mints GitHub App installation tokens. It is safe for concurrent
// use.
type Source struct {
	cfg    Config
	client *http.Client

	mu      sync.Mutex
	keys    map[string]cachedKey    // by secret name
	owners  map[string]string       // api|app|owner → installation id
	blocked map[string]blockedUntil // api url → rate limited until
}

type cachedKey struct {
	version int
	key     *rsa.PrivateKey
}

type blockedUntil struct {
	until time.Time
	why   string
}

// New returns a Source.
func New(cfg Config) *Source {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	base := cfg.Client
	if base == nil {
		base = &http.Client{Timeout: 30 * time.Second}
	}
	c := *base
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Source{cfg: cfg, client: &c, keys: map[string]cachedKey{}, owners: map[string]string{}, blocked: map[string]blockedUntil{}}
}

// params is what revoking a token needs that is not secret.
type params struct {
	APIURL string `json:"api_url"`
}

func apiURL(up *policy.Upstream) string {
	if a := up.Credential.GitHubApp; a != nil && a.APIURL != "" {
		return a.APIURL
	}
	return up.URL
}

// Plan names nothing (GitHub names its tokens) and keeps the API's url.
func (s *Source) Plan(_ context.Context, r mint.Request) (mint.Plan, error) {
	if r.Upstream.Credential.GitHubApp == nil {
		return mint.Plan{}, mint.Errorf(500, "upstream_misconfigured", "upstream %s has no github_app credential", r.Upstream.Name)
	}
	b, err := json.Marshal(params{APIURL: apiURL(r.Upstream)})
	if err != nil {
		return mint.Plan{}, err
	}
	return mint.Plan{Params: b}, nil
}

// Mint asks GitHub for an installation token scoped to the grant.
func (s *Source) Mint(ctx context.Context, r mint.Request, _ mint.Plan) (mint.Minted, error) {
	app := r.Upstream.Credential.GitHubApp
	api := apiURL(r.Upstream)
	if err := s.checkBlocked(api); err != nil {
		return mint.Minted{}, err
	}
	jwtStr, err := s.appJWT(ctx, app)
	if err != nil {
		return mint.Minted{}, err
	}
	inst := app.InstallationID
	if inst == "" {
		if inst, err = s.installation(ctx, api, app, jwtStr); err != nil {
			return mint.Minted{}, err
		}
	}
	body := map[string]any{}
	if g := r.Grant.GitHub; g != nil {
		if len(g.Repositories) > 0 {
			body["repositories"] = g.Repositories
		}
		if len(g.Permissions) > 0 {
			body["permissions"] = g.Permissions
		}
	}
	reqBody, err := json.Marshal(body)
	if err != nil {
		return mint.Minted{}, err
	}
	resp, data, err := s.do(ctx, http.MethodPost, api+"/app/installations/"+url.PathEscape(inst)+"/access_tokens", "Bearer "+jwtStr, reqBody)
	if err != nil {
		return mint.Minted{}, err
	}
	switch resp.StatusCode {
	case http.StatusCreated, http.StatusOK:
	case http.StatusNotFound:
		if app.InstallationID == "" {
			// Looked up by owner: the App may have been installed again
			// under a new id; look it up afresh next time.
			s.mu.Lock()
			delete(s.owners, api+"|"+app.AppID+"|"+strings.ToLower(app.Owner))
			s.mu.Unlock()
		}
		return mint.Minted{}, mint.Errorf(502, "upstream_refused", "GitHub: installation %s of App %s not found (404)", inst, app.AppID)
	case http.StatusUnprocessableEntity:
		return mint.Minted{}, mint.Errorf(502, "upstream_refused", "GitHub refused the token's scope (422): %s", message(data))
	default:
		return mint.Minted{}, s.failure(api, resp, data, "the installation token request")
	}
	var tr tokenAnswer
	if err := json.Unmarshal(data, &tr); err != nil || tr.Token == "" || len(tr.Token) > maxTokenLen || strings.ContainsFunc(tr.Token, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return mint.Minted{}, mint.Errorf(502, "upstream_refused", "GitHub answered the token request with something that is not an installation token")
	}
	exp := tr.ExpiresAt
	if exp.IsZero() || exp.After(s.cfg.Now().Add(time.Hour)) {
		exp = s.cfg.Now().Add(time.Hour)
	}
	if !r.ExpiresAt.IsZero() && r.ExpiresAt.Before(exp) {
		exp = r.ExpiresAt
	}
	if why := tr.wider(r.Grant.GitHub); why != "" {
		// Never hand out more than the grant asked for. The token goes
		// back with the refusal, without its credential, for the
		// manager to record and delete, retried until GitHub confirms:
		// one DELETE here that failed left it alive, on no record.
		return mint.Minted{Secret: tr.Token, Material: []byte(tr.Token), ExpiresAt: exp},
			mint.Errorf(502, "upstream_refused", "GitHub granted %s, more than the grant asks for; the token is deleted", why)
	}
	return mint.Minted{Credential: mint.Credential{Token: tr.Token, ExpiresAt: exp}, Secret: tr.Token, Material: []byte(tr.Token), ExpiresAt: exp}, nil
}

// tokenAnswer is GitHub's answer to an installation token request.
type tokenAnswer struct {
	Token               string            `json:"token"`
	ExpiresAt           time.Time         `json:"expires_at"`
	Permissions         map[string]string `json:"permissions"`
	RepositorySelection string            `json:"repository_selection"`
	Repositories        []struct {
		Name string `json:"name"`
	} `json:"repositories"`
}

// wider says what the answered token may do beyond scope ("" when
// nothing): a permission not asked for (metadata: read, not more, comes
// with every token) or at a higher level, and, when the grant names
// repositories, all of the installation's or one it does not name
// (GitHub's names are case-insensitive). An answer that does not say
// what the token may do (no permissions; no selected repositories when
// the grant names some) is wider too: GitHub always says, and what is
// not said cannot be checked.
func (a *tokenAnswer) wider(scope *policy.GitHubScope) string {
	if scope == nil {
		return ""
	}
	if len(scope.Permissions) > 0 && len(a.Permissions) == 0 {
		return "permissions it does not name (the answer lists none)"
	}
	for _, p := range slices.Sorted(maps.Keys(a.Permissions)) {
		lv := a.Permissions[p]
		want, asked := scope.Permissions[p]
		if !asked && p == "metadata" {
			want, asked = "read", true
		}
		if !asked || rank(lv) > rank(want) {
			return fmt.Sprintf("%s: %s", clipName(p), clipName(lv))
		}
	}
	if len(scope.Repositories) == 0 {
		return ""
	}
	if a.RepositorySelection == "all" {
		return "repositories the grant does not name (all of the installation's)"
	}
	if a.RepositorySelection != "selected" || len(a.Repositories) == 0 {
		return "repositories it does not name (the answer lists none)"
	}
	for _, repo := range a.Repositories {
		if !slices.ContainsFunc(scope.Repositories, func(n string) bool { return strings.EqualFold(n, repo.Name) }) {
			return fmt.Sprintf("repositories the grant does not name (%s)", clipName(repo.Name))
		}
	}
	return ""
}

// clipName bounds a name GitHub answered, for an error.
func clipName(s string) string { return printable(s, 100) }

// printable is what GitHub answered, for an error: control characters
// made spaces, cut at about limit bytes, never inside a credential it
// quotes (token.Clip: cut in its checksum, redaction would miss it).
func printable(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if c := token.Clip(s, limit); len(c) < len(s) {
		return c + "…"
	}
	return s
}

// maxTokenLen bounds an installation token: GitHub's stateless ones (its
// 2026 format, "ghs_<app id>_<JWT>") are about 520 characters and vary with
// what they hold; the classic ones are 40.
const maxTokenLen = 8 << 10

func rank(level string) int {
	switch level {
	case "read":
		return 1
	case "write":
		return 2
	case "admin":
		return 3
	}
	return 4
}

// Renew does nothing: an installation token cannot be extended. It dies
// at its own expiry (at most an hour) or when its lease ends, whichever
// comes first.
func (s *Source) Renew(context.Context, mint.Record, time.Time) error { return nil }

// Revoke deletes the token (DELETE /installation/token, authenticated by
// the token itself). A token GitHub no longer knows (401: expired or
// deleted) is revoked; nothing to delete (never created) is too.
func (s *Source) Revoke(ctx context.Context, rec mint.Record) error {
	if len(rec.Material) == 0 {
		return nil
	}
	api, err := s.revocationAPI(rec)
	if err != nil {
		return err
	}
	if err := s.checkBlocked(api); err != nil {
		return err
	}
	resp, data, err := s.do(ctx, http.MethodDelete, api+"/installation/token", "token "+string(rec.Material), nil)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusUnauthorized:
		return nil
	}
	return s.failure(api, resp, data, "deleting the installation token")
}

// revocationAPI is the API a record's token is deleted at. The record's
// own api_url is trusted only when its fields are authenticated; otherwise
// (stored before records were tagged, or planted by a database writer
// without the seal key, who would have the token sent to their server)
// it is the API the policy in force gives the record's upstream, and a
// record whose upstream is not a github_app upstream there is not acted
// on: its token dies by itself within the hour.
func (s *Source) revocationAPI(rec mint.Record) (string, error) {
	if !rec.Authenticated {
		var pol *policy.Policy
		if s.cfg.Policy != nil {
			pol = s.cfg.Policy()
		}
		if pol != nil {
			if up := pol.Upstreams[rec.Upstream]; up != nil && up.Credential.GitHubApp != nil {
				return apiURL(up), nil
			}
		}
		return "", mint.Errorf(500, "upstream_misconfigured", "upstream %s: the record of %s carries no valid tag and its upstream is not a github_app upstream of the policy: "+
			"not acted on (its token expires by itself within an hour)", rec.Upstream, rec.ID)
	}
	var p params
	if err := json.Unmarshal(rec.Params, &p); err != nil || p.APIURL == "" {
		return "", errors.New("github: the record does not say which API issued the token")
	}
	return p.APIURL, nil
}

// installation finds the App's installation on app.Owner, paging through
// GET /app/installations; found ids are kept.
func (s *Source) installation(ctx context.Context, api string, app *policy.GitHubApp, jwtStr string) (string, error) {
	key := api + "|" + app.AppID + "|" + strings.ToLower(app.Owner)
	s.mu.Lock()
	id, ok := s.owners[key]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	next := api + "/app/installations?per_page=100"
	for page := 0; next != "" && page < 50; page++ {
		resp, data, err := s.do(ctx, http.MethodGet, next, "Bearer "+jwtStr, nil)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", s.failure(api, resp, data, "listing the App's installations")
		}
		var list []struct {
			ID      int64 `json:"id"`
			Account struct {
				Login string `json:"login"`
			} `json:"account"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return "", mint.Errorf(502, "upstream_refused", "GitHub answered GET /app/installations with something that is not a list of installations")
		}
		for _, in := range list {
			if strings.EqualFold(in.Account.Login, app.Owner) && in.ID > 0 {
				id := strconv.FormatInt(in.ID, 10)
				s.mu.Lock()
				s.owners[key] = id
				s.mu.Unlock()
				return id, nil
			}
		}
		next = nextLink(resp.Header.Get("Link"), api)
	}
	return "", mint.Errorf(502, "upstream_refused", "GitHub: App %s is not installed on %s", app.AppID, app.Owner)
}

// nextLink reads rel="next" from a Link header, only when it stays on api.
func nextLink(h, api string) string {
	for _, part := range strings.Split(h, ",") {
		seg := strings.Split(part, ";")
		if len(seg) < 2 || !slices.ContainsFunc(seg[1:], func(s string) bool { return strings.TrimSpace(s) == `rel="next"` }) {
			continue
		}
		u := strings.Trim(strings.TrimSpace(seg[0]), "<>")
		if strings.HasPrefix(u, api+"/") {
			return u
		}
	}
	return ""
}

// appJWT signs the App's JWT with its private key.
func (s *Source) appJWT(ctx context.Context, app *policy.GitHubApp) (string, error) {
	key, err := s.key(ctx, app.PrivateKeySecret)
	if err != nil {
		return "", err
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", mint.Errorf(500, "upstream_misconfigured", "the GitHub App key in secret %s cannot sign: %v", app.PrivateKeySecret, err)
	}
	now := s.cfg.Now()
	// iat 60 s in the past against clock drift, exp 9 min ahead (GitHub
	// refuses more than 10), as GitHub documents.
	c := jwt.Claims{Issuer: app.AppID, IssuedAt: jwt.NewNumericDate(now.Add(-60 * time.Second)), Expiry: jwt.NewNumericDate(now.Add(9 * time.Minute))}
	out, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		return "", mint.Errorf(500, "upstream_misconfigured", "signing the GitHub App JWT: %v", err)
	}
	return out, nil
}

// key reads and parses the App's PEM private key (PKCS#1, as GitHub hands
// it out, or PKCS#8), kept while the secret's version is unchanged.
func (s *Source) key(ctx context.Context, name string) (*rsa.PrivateKey, error) {
	if s.cfg.Secrets == nil {
		return nil, mint.Errorf(500, "upstream_misconfigured", "no secret store to read the GitHub App key from")
	}
	raw, ver, err := s.cfg.Secrets.Reveal(ctx, name)
	if err != nil {
		return nil, mint.Errorf(500, "upstream_misconfigured", "the GitHub App key secret %s cannot be read", name)
	}
	defer clear(raw)
	s.mu.Lock()
	c, ok := s.keys[name]
	s.mu.Unlock()
	if ok && c.version == ver {
		return c.key, nil
	}
	k, err := parseKey(raw)
	if err != nil {
		return nil, mint.Errorf(500, "upstream_misconfigured", "the GitHub App private key in secret %s does not parse: %v", name, err)
	}
	s.mu.Lock()
	s.keys[name] = cachedKey{version: ver, key: k}
	s.mu.Unlock()
	return k, nil
}

func parseKey(raw []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(bytes.TrimSpace(raw))
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	rk, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, errors.New("neither a PKCS#1 nor a PKCS#8 private key")
		}
		var ok bool
		if rk, ok = k.(*rsa.PrivateKey); !ok {
			return nil, errors.New("not an RSA key (GitHub App keys are RSA)")
		}
	}
	if rk.N.BitLen() < 2048 {
		return nil, errors.New("an RSA key shorter than 2048 bits")
	}
	return rk, nil
}

const maxBody = 1 << 20

// do sends one request to GitHub and reads at most maxBody of the answer.
// Transport failures are 503s naming GitHub.
func (s *Source) do(ctx context.Context, method, u, auth string, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, mint.Errorf(500, "upstream_misconfigured", "GitHub request: %v", err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "mayfly")
	req.Header.Set("Authorization", auth)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, mint.Errorf(503, "upstream_unavailable", "GitHub is unreachable: %v", scrub(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, mint.Errorf(503, "upstream_unavailable", "GitHub's answer broke off: %v", scrub(err))
	}
	// An answer whose message quotes the credential it was sent (a GitHub
	// Enterprise front end, a debugging proxy) would put it in the error
	// built from that message: the App JWT in the job's answer, the
	// installation token in minted.last_error, the audit log and the log.
	if _, cred, _ := strings.Cut(auth, " "); cred != "" {
		data = bytes.ReplaceAll(data, []byte(cred), []byte("[credential sent]"))
	}
	return resp, data, nil
}

// scrub names the url and what went wrong, never the failure's text: Go
// quotes a malformed answer's line, and an answer echoing Authorization
// would put the App JWT or the installation token there (netfail).
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, ue.URL, netfail.Describe(ue.Err))
	}
	return netfail.Describe(err)
}

// failure turns an unexpected answer into an error, remembering a rate
// limit so that nothing more is asked of api until it lifts.
func (s *Source) failure(api string, resp *http.Response, data []byte, what string) error {
	now := s.cfg.Now()
	ra := resp.Header.Get("Retry-After")
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode == http.StatusForbidden && ra != ""):
		wait := 60 * time.Second
		if n, err := strconv.Atoi(strings.TrimSpace(ra)); err == nil && n >= 0 && n <= 3600 {
			wait = time.Duration(n) * time.Second
		}
		return s.block(api, now.Add(wait), fmt.Sprintf("GitHub's secondary rate limit (%d, retry after %ds) during %s", resp.StatusCode, int(wait.Seconds()), what))
	case resp.StatusCode == http.StatusForbidden && resp.Header.Get("X-Ratelimit-Remaining") == "0":
		until := now.Add(60 * time.Second)
		if n, err := strconv.ParseInt(resp.Header.Get("X-Ratelimit-Reset"), 10, 64); err == nil {
			if t := time.Unix(n, 0); t.After(now) && t.Before(now.Add(2*time.Hour)) {
				until = t
			}
		}
		return s.block(api, until, fmt.Sprintf("GitHub's rate limit is spent until %s (during %s)", until.UTC().Format(time.RFC3339), what))
	case resp.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(message(data)), "rate limit"):
		// A secondary limit without retry-after: GitHub's docs say to
		// wait at least a minute.
		return s.block(api, now.Add(60*time.Second), fmt.Sprintf("GitHub's secondary rate limit (403, no retry-after: waiting 60s) during %s", what))
	case resp.StatusCode == http.StatusUnauthorized:
		return mint.Errorf(502, "upstream_refused", "GitHub refused the App's JWT (401) during %s: check app_id and the private key", what)
	case resp.StatusCode >= 500:
		return mint.Errorf(503, "upstream_unavailable", "GitHub failed (%d) during %s", resp.StatusCode, what)
	}
	return mint.Errorf(502, "upstream_refused", "GitHub answered %d during %s: %s", resp.StatusCode, what, message(data))
}

func (s *Source) block(api string, until time.Time, why string) error {
	s.mu.Lock()
	if until.After(s.blocked[api].until) {
		s.blocked[api] = blockedUntil{until: until, why: why}
	}
	s.mu.Unlock()
	return mint.Errorf(503, "upstream_unavailable", "%s", why)
}

// checkBlocked refuses at once while api's rate limit lasts.
func (s *Source) checkBlocked(api string) error {
	s.mu.Lock()
	b := s.blocked[api]
	s.mu.Unlock()
	if now := s.cfg.Now(); now.Before(b.until) {
		return mint.Errorf(503, "upstream_unavailable", "%s; not asking again for %ds", b.why, int(b.until.Sub(now).Seconds())+1)
	}
	return nil
}

// message is GitHub's "message" field, clipped and printable.
func message(data []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &m) != nil || m.Message == "" {
		return "no message"
	}
	return printable(m.Message, 200)
}
