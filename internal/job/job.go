// Package job is the job side of mayfly (SPEC section 8): it finds the CI
// job's OIDC ID token (GitHub Actions' request URL, GitLab's id_tokens
// variable, a file or a named variable), keeps the job's DPoP key, and
// writes an exchanged job token out in the formats a pipeline consumes. The
// exchange, renewal and revocation themselves are internal/client's.
//
// It never writes a job token or ID token into an error or a log line, never
// sends either over plain HTTP to a host that is not loopback, and never
// decides what the job may do.
package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/token"
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
	tr.Proxy = client.Proxy // the request URL may be plain http on loopback
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{Transport: tr, Timeout: 60 * time.Second, CheckRedirect: noRedirect}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// fetchGitHub asks GitHub Actions' request URL for an ID token with aud.
func fetchGitHub(ctx context.Context, hc *http.Client, reqURL, reqTok, aud string) (string, error) {
	u, err := url.Parse(reqURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && client.IsLoopback(u.Hostname()))) {
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

// Formats Write knows.
var Formats = []string{"token", "env", "json", "github-env"}

// Output says where Write puts things.
type Output struct {
	Stdout io.Writer
	// GitHubEnv is the path of $GITHUB_ENV (format github-env).
	GitHubEnv string
}

// CredentialEnv returns the environment variables of the minted
// credentials delivered to the job (SPEC section 9), sorted by name: a
// token is GH_TOKEN; a database role is PGHOST, PGPORT, PGUSER, PGPASSWORD,
// PGDATABASE, DATABASE_URL, and PGSSLMODE and PGSSLROOTCERT when the DSN
// names them. Two credentials that would set the same
// variable are an error (ask for them in separate logins, or use json).
func CredentialEnv(creds map[string]apitype.UpstreamCredential) ([][2]string, error) {
	set := map[string]string{}
	from := map[string]string{}
	put := func(up, k, v string) error {
		if prev, ok := from[k]; ok && prev != up {
			return fmt.Errorf("upstreams %s and %s both deliver %s: ask for them in separate logins, or use --format json", prev, up, k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("upstream %s: the credential holds a line break", up)
		}
		set[k], from[k] = v, up
		return nil
	}
	for _, up := range slices.Sorted(maps.Keys(creds)) {
		c := creds[up]
		if c.Token != "" {
			if err := put(up, "GH_TOKEN", c.Token); err != nil {
				return nil, err
			}
		}
		if c.DSN == "" {
			continue
		}
		u, err := url.Parse(c.DSN)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: the DSN does not parse", up)
		}
		// A Unix socket directory travels in the query (libpq's form:
		// postgres://user:pw@/db?host=/run/postgresql&port=5432).
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host, port = u.Query().Get("host"), u.Query().Get("port")
		}
		if host == "" {
			return nil, fmt.Errorf("upstream %s: the DSN names no host", up)
		}
		user, pass := c.Username, c.Password
		if u.User != nil {
			if user == "" {
				user = u.User.Username()
			}
			if p, ok := u.User.Password(); ok && pass == "" {
				pass = p
			}
		}
		if port == "" {
			port = "5432"
		}
		vars := [][2]string{{"PGHOST", host}, {"PGPORT", port}, {"PGUSER", user}, {"PGPASSWORD", pass},
			{"PGDATABASE", strings.TrimPrefix(u.Path, "/")}, {"DATABASE_URL", c.DSN}}
		// The PG* variables must check the server as strictly as the DSN:
		// without PGSSLMODE libpq falls back to "prefer" (no verification,
		// plaintext allowed) and the password goes out unprotected. A DSN
		// without sslmode gets nothing: libpq's defaults (or the job's own
		// PGSSLMODE) then apply to DATABASE_URL and PG* alike.
		for _, p := range [][2]string{{"sslmode", "PGSSLMODE"}, {"sslrootcert", "PGSSLROOTCERT"}} {
			if v := u.Query().Get(p[0]); v != "" {
				vars = append(vars, [2]string{p[1], v})
			}
		}
		for _, kv := range vars {
			if err := put(up, kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	out := make([][2]string, 0, len(set))
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, [2]string{k, set[k]})
	}
	return out, nil
}

// shellQuote returns v as one sh word standing for v: as it is when it has
// only characters sh gives no meaning to (so a token stays a plain line for
// tools that read the file without a shell), else in single quotes.
func shellQuote(v string) string {
	plain := true
	for _, c := range v {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("_@%+=:,./-", c)) {
			plain = false
			break
		}
	}
	if plain {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// workflowData escapes v as GitHub's runner decodes a workflow command's
// data: a line break in a server-supplied value must not end the command
// and start another, and a literal "%0A" must be masked as itself.
func workflowData(v string) string {
	v = strings.ReplaceAll(v, "%", "%25")
	v = strings.ReplaceAll(v, "\r", "%0D")
	return strings.ReplaceAll(v, "\n", "%0A")
}

// Write prints the exchanged token in format:
//   - token: the bare token;
//   - env: MAYFLY_TOKEN=… and MAYFLY_GATEWAY=<addr>/gw lines, then the
//     delivered credentials' variables (CredentialEnv), each value quoted
//     for sh when it needs it;
//   - json: the server's response as received;
//   - github-env: "::add-mask::<value>" on stdout first for the token and
//     every delivered credential (so the runner masks them), then the
//     variables appended to the $GITHUB_ENV file.
func Write(o Output, format, addr string, tr *apitype.TokenResponse, raw []byte) error {
	if k, err := token.Parse(tr.AccessToken); err != nil || k != token.Job {
		return errors.New("not a mayfly job token")
	}
	creds, err := CredentialEnv(tr.UpstreamCredentials)
	if err != nil {
		return err
	}
	vars := append([][2]string{{"MAYFLY_TOKEN", tr.AccessToken}, {"MAYFLY_GATEWAY", GatewayURL(addr)}}, creds...)
	// $GITHUB_ENV takes each value literally; the env format is sourced by
	// sh, so a value the shell would read otherwise (a DSN's "&") is quoted.
	var env, shellEnv string
	for _, kv := range vars {
		env += kv[0] + "=" + kv[1] + "\n"
		shellEnv += kv[0] + "=" + shellQuote(kv[1]) + "\n"
	}
	masks := []string{tr.AccessToken}
	for _, c := range tr.UpstreamCredentials {
		masks = append(masks, c.Secrets()...)
	}
	switch format {
	case "", "token":
		_, err = io.WriteString(o.Stdout, tr.AccessToken+"\n")
	case "env":
		_, err = io.WriteString(o.Stdout, shellEnv)
	case "json":
		raw = []byte(strings.TrimRight(string(raw), "\n"))
		_, err = o.Stdout.Write(append(raw, '\n'))
	case "github-env":
		if o.GitHubEnv == "" {
			return errors.New("format github-env: GITHUB_ENV is not set (not in GitHub Actions?)")
		}
		for _, v := range masks {
			if _, err = io.WriteString(o.Stdout, "::add-mask::"+workflowData(v)+"\n"); err != nil {
				return err
			}
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
