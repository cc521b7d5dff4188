// Package job is the job side of mayfly (SPEC section 8): it finds the CI
// job's OIDC ID token (GitHub Actions' request URL, GitLab's id_tokens
// variable, a file or a named variable), exchanges it for a job token at
// POST /v1/token (RFC 8693, optionally DPoP-bound), renews and revokes that
// token, and writes it out in the formats a pipeline consumes.
//
// It owns the client half of the exchange. It never writes a job token or ID
// token into an error or a log line, never sends either over plain HTTP to a
// host that is not loopback, and never decides what the job may do.
package job

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Token-exchange constants (RFC 8693).
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeIDToken       = "urn:ietf:params:oauth:token-type:id_token"
)

// Environment variables the job side reads.
const (
	EnvAddr                = "MAYFLY_ADDR"
	EnvAudience            = "MAYFLY_AUDIENCE"
	EnvIDToken             = "MAYFLY_ID_TOKEN" // GitLab: the default id_tokens variable
	EnvActionsRequestURL   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	EnvActionsRequestToken = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
	EnvGitHubEnv           = "GITHUB_ENV"
)

// MaxIDTokenSize bounds an ID token read from anywhere.
const MaxIDTokenSize = 64 << 10

// maxResponse bounds a response body read by this package.
const maxResponse = 1 << 20

// NormalizeAddr checks a server address: an absolute http(s) URL, plain http
// only to a loopback address (a token must never cross a network in the
// clear). It returns it without a trailing "/".
func NormalizeAddr(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("no server address: set MAYFLY_ADDR or pass --addr")
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("server address %q is not an absolute http(s) URL", addr)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("server address %q may not carry user info, a query or a fragment", addr)
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return "", fmt.Errorf("server address %q: plain http is allowed only to a loopback address", addr)
	}
	return strings.TrimRight(addr, "/"), nil
}

// IsLoopback reports whether host (a name or an address, without port) is
// "localhost" or a loopback address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// GatewayURL is the gateway base for a server address: addr + "/gw".
func GatewayURL(addr string) string { return strings.TrimRight(addr, "/") + "/gw" }

// IDTokenOptions say where to look for the job's ID token.
type IDTokenOptions struct {
	// File, when set, is read (--id-token-file).
	File string
	// EnvVar, when set, names the variable holding the token (--id-token-env;
	// GitLab's id_tokens variable).
	EnvVar string
	// Audience is asked of GitHub's request URL (default: MAYFLY_AUDIENCE,
	// then MAYFLY_ADDR).
	Audience string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// HTTPClient fetches from GitHub's request URL (default: a client with
	// timeouts that trusts the system roots).
	HTTPClient *http.Client
}

// Source names where an ID token was found.
type Source string

const (
	SourceFile   Source = "file"
	SourceEnv    Source = "env"
	SourceGitHub Source = "github-actions"
	SourceGitLab Source = "gitlab" // MAYFLY_ID_TOKEN
)

// ErrNoIDToken is returned when no ID token could be found.
var ErrNoIDToken = errors.New("no ID token found: not in GitHub Actions (ACTIONS_ID_TOKEN_REQUEST_URL with `permissions: id-token: write`), " +
	"no " + EnvIDToken + " (GitLab id_tokens), and neither --id-token-file nor --id-token-env given")

// FindIDToken finds the job's ID token, in this order: the file given, the
// variable given, GitHub Actions' request URL, MAYFLY_ID_TOKEN.
func FindIDToken(ctx context.Context, o IDTokenOptions) (string, Source, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	switch {
	case o.File != "" && o.EnvVar != "":
		return "", "", errors.New("give only one of --id-token-file and --id-token-env")
	case o.File != "":
		f, err := os.Open(o.File)
		if err != nil {
			return "", "", fmt.Errorf("reading ID token: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, MaxIDTokenSize+1))
		if err != nil {
			return "", "", fmt.Errorf("reading ID token from %s: %w", o.File, err)
		}
		t, err := cleanIDToken(string(b))
		if err != nil {
			return "", "", fmt.Errorf("ID token in %s: %w", o.File, err)
		}
		return t, SourceFile, nil
	case o.EnvVar != "":
		v := getenv(o.EnvVar)
		if v == "" {
			return "", "", fmt.Errorf("ID token variable %s is empty or not set", o.EnvVar)
		}
		t, err := cleanIDToken(v)
		if err != nil {
			return "", "", fmt.Errorf("ID token in %s: %w", o.EnvVar, err)
		}
		return t, SourceEnv, nil
	}
	if reqURL := getenv(EnvActionsRequestURL); reqURL != "" {
		reqTok := getenv(EnvActionsRequestToken)
		if reqTok == "" {
			return "", "", fmt.Errorf("%s is set but %s is not", EnvActionsRequestURL, EnvActionsRequestToken)
		}
		aud := o.Audience
		if aud == "" {
			aud = getenv(EnvAudience)
		}
		if aud == "" {
			aud = strings.TrimRight(getenv(EnvAddr), "/")
		}
		t, err := fetchGitHub(ctx, o.HTTPClient, reqURL, reqTok, aud)
		if err != nil {
			return "", "", err
		}
		return t, SourceGitHub, nil
	}
	if v := getenv(EnvIDToken); v != "" {
		t, err := cleanIDToken(v)
		if err != nil {
			return "", "", fmt.Errorf("ID token in %s: %w", EnvIDToken, err)
		}
		return t, SourceGitLab, nil
	}
	return "", "", ErrNoIDToken
}

// cleanIDToken trims whitespace and checks the compact JWS shape, so that a
// wrong file or variable gives a clear error before any network call.
func cleanIDToken(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxIDTokenSize {
		return "", fmt.Errorf("longer than %d bytes", MaxIDTokenSize)
	}
	if s == "" {
		return "", errors.New("empty")
	}
	if strings.Count(s, ".") != 2 || strings.IndexFunc(s, func(r rune) bool {
		return !(r == '.' || r == '-' || r == '_' || r == '=' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)))
	}) >= 0 {
		return "", errors.New("not a compact JWT (header.payload.signature)")
	}
	return s, nil
}

// DefaultHTTPClient is a client with timeouts, TLS 1.2 or later and the
// system roots, that follows no redirect to another host.
func DefaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = nil
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: tr, Timeout: 60 * time.Second, CheckRedirect: noRedirect}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// fetchGitHub asks GitHub Actions' request URL for an ID token with aud.
func fetchGitHub(ctx context.Context, hc *http.Client, reqURL, reqTok, aud string) (string, error) {
	u, err := url.Parse(reqURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && IsLoopback(u.Hostname()))) {
		return "", fmt.Errorf("%s is not an https URL (or http on loopback)", EnvActionsRequestURL)
	}
	if aud != "" {
		q := u.Query()
		q.Set("audience", aud)
		u.RawQuery = q.Encode()
	}
	if hc == nil {
		hc = DefaultHTTPClient()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("requesting the GitHub Actions ID token: %w", err)
	}
	req.Header.Set("Authorization", "bearer "+reqTok)
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("requesting the GitHub Actions ID token from %s: %w", u.Host, scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxIDTokenSize+4096))
	if err != nil {
		return "", fmt.Errorf("reading the GitHub Actions ID token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GitHub Actions ID token request: HTTP %d (does the workflow have `permissions: id-token: write`?)", resp.StatusCode)
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("GitHub Actions ID token response is not {\"value\":…}: %w", err)
	}
	t, err := cleanIDToken(v.Value)
	if err != nil {
		return "", fmt.Errorf("GitHub Actions ID token: %w", err)
	}
	return t, nil
}

// scrubURLError drops the URL from a *url.Error: a request URL may carry
// credentials in its query.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Error is a refusal from the server in SPEC section 4's error shape.
type Error struct {
	Status      int
	Code        string
	Description string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(e.Code)
	} else {
		b.WriteString(http.StatusText(e.Status))
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	return b.String()
}

// ReadError turns a non-2xx response into an *Error; the description is
// reduced to one printable line.
func ReadError(resp *http.Response) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	var v struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &v) == nil {
		e.Code, e.Description = OneLine(v.Error, 64), OneLine(v.Description, 300)
	}
	return e
}

// OneLine makes s safe to print as part of one line: control characters
// become spaces, runs of space collapse, and it is cut at max runes.
func OneLine(s string, max int) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
			space = b.Len() > 0
			continue
		}
		need := 1
		if space {
			need = 2 // the pending space counts too
		}
		if n+need > max {
			b.WriteString("…")
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
			n++
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// ExchangeRequest is one token exchange.
type ExchangeRequest struct {
	IDToken string
	Grants  []string
	TTL     time.Duration // 0: the grant's ttl
	// DPoPKey, when set, binds the token to this key (RFC 9449).
	DPoPKey crypto.Signer
}

// TokenResponse is POST /v1/token's answer.
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
	LeaseID         string `json:"lease_id"`
}

// Client talks to the job-facing endpoints of one server.
type Client struct {
	Addr string // normalised, see NormalizeAddr
	HTTP *http.Client
	Now  func() time.Time
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return DefaultHTTPClient()
}

// Exchange trades an ID token for a job token. It returns the parsed
// response and its raw bytes. A refusal is an *Error.
func (c *Client) Exchange(ctx context.Context, r ExchangeRequest) (*TokenResponse, []byte, error) {
	if len(r.Grants) == 0 {
		return nil, nil, errors.New("no grant asked (--grant NAME)")
	}
	form := url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {r.IDToken},
		"subject_token_type": {TokenTypeIDToken},
		"scope":              {strings.Join(r.Grants, " ")},
	}
	if r.TTL > 0 {
		secs := int64((r.TTL + time.Second - 1) / time.Second)
		form.Set("ttl", strconv.FormatInt(secs, 10))
	}
	endpoint := c.Addr + "/v1/token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, fmt.Errorf("token exchange: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if r.DPoPKey != nil {
		proof, err := dpop.NewProof(r.DPoPKey, http.MethodPost, endpoint, "", c.now())
		if err != nil {
			return nil, nil, fmt.Errorf("token exchange: DPoP proof: %w", err)
		}
		req.Header.Set("DPoP", proof)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("token exchange: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, ReadError(resp)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, nil, fmt.Errorf("token exchange: reading response: %w", err)
	}
	var tr TokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil {
		return nil, nil, fmt.Errorf("token exchange: response is not JSON: %w", err)
	}
	// The token ends up in environment files and shell variables: accept
	// only a well-formed job token, so nothing else can be injected there.
	if k, err := token.Parse(tr.AccessToken); err != nil || k != token.Job {
		return nil, nil, errors.New("token exchange: the server's access_token is not a mayfly job token")
	}
	return &tr, raw, nil
}

// Renew extends tok by its grant's ttl (POST /v1/token/renew) and returns
// the response (expires_in is the new remaining lifetime).
func (c *Client) Renew(ctx context.Context, tok string) (*TokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Addr+"/v1/token/renew", nil)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, ReadError(resp)
	}
	var tr TokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&tr); err != nil {
		return nil, fmt.Errorf("renew: response: %w", err)
	}
	return &tr, nil
}

// Revoke kills tok (POST /v1/revoke, RFC 7009).
func (c *Client) Revoke(ctx context.Context, tok string) error {
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Addr+"/v1/revoke", strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Formats Write knows.
var Formats = []string{"token", "env", "json", "github-env"}

// Output says where Write puts things.
type Output struct {
	Stdout io.Writer
	// GitHubEnv is the path of $GITHUB_ENV (format github-env).
	GitHubEnv string
}

// Write prints the exchanged token in format:
//   - token: the bare token;
//   - env: MAYFLY_TOKEN=… and MAYFLY_GATEWAY=<addr>/gw lines;
//   - json: the server's response as received;
//   - github-env: "::add-mask::<token>" on stdout first (so the runner masks
//     it), then both variables appended to the $GITHUB_ENV file.
func Write(o Output, format, addr string, tr *TokenResponse, raw []byte) error {
	if k, err := token.Parse(tr.AccessToken); err != nil || k != token.Job {
		return errors.New("not a mayfly job token")
	}
	env := "MAYFLY_TOKEN=" + tr.AccessToken + "\nMAYFLY_GATEWAY=" + GatewayURL(addr) + "\n"
	var err error
	switch format {
	case "", "token":
		_, err = io.WriteString(o.Stdout, tr.AccessToken+"\n")
	case "env":
		_, err = io.WriteString(o.Stdout, env)
	case "json":
		raw = []byte(strings.TrimRight(string(raw), "\n"))
		_, err = o.Stdout.Write(append(raw, '\n'))
	case "github-env":
		if o.GitHubEnv == "" {
			return errors.New("format github-env: GITHUB_ENV is not set (not in GitHub Actions?)")
		}
		if _, err = io.WriteString(o.Stdout, "::add-mask::"+tr.AccessToken+"\n"); err != nil {
			return err
		}
		var f *os.File
		f, err = os.OpenFile(o.GitHubEnv, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("format github-env: %w", err)
		}
		_, err = io.WriteString(f, env)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("format github-env: writing %s: %w", o.GitHubEnv, err)
		}
	default:
		return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
	}
	return err
}
