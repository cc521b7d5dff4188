// Package client is the one HTTP client of a mayfly server's /v1 API, used
// by every caller: the CLI's admin and job commands, `scan --revoke`, the
// job side (internal/job) and the demo. Requests and responses are the
// shared types of internal/apitype.
//
// It owns finding the server (MAYFLY_ADDR), trusting it (MAYFLY_CACERT),
// presenting an admin client certificate (MAYFLY_CLIENT_CERT and
// MAYFLY_CLIENT_KEY) and the admin token (MAYFLY_TOKEN), timeouts, response
// size limits and turning refusals into errors that say what to fix.
//
// It never follows a redirect (a request carrying a token or a secret is
// never replayed to another URL), never sends a token over plain HTTP to a
// host that is not loopback, never puts a token or a secret value into an
// error, and never decides anything: the server does.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"syscall"
	"time"
	"unicode"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/keyfile"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Environment variables a client reads (SPEC section 1).
const (
	EnvAddr       = "MAYFLY_ADDR"
	EnvCACert     = "MAYFLY_CACERT"
	EnvToken      = "MAYFLY_TOKEN"
	EnvClientCert = "MAYFLY_CLIENT_CERT"
	EnvClientKey  = "MAYFLY_CLIENT_KEY"
)

// Bounds on what a client reads and how long it waits.
const (
	// MaxJSONResponse bounds a JSON answer.
	MaxJSONResponse = 16 << 20
	// maxErrorBody bounds the part of a refusal's body that is read.
	maxErrorBody = 64 << 10
	// DefaultTimeout bounds one request from start to the end of its
	// answer, unless Config.Timeout says otherwise.
	DefaultTimeout = 60 * time.Second
	maxPEMFile     = 1 << 20
)

// Config says which server to talk to and how. Empty fields are taken from
// the environment (Getenv): an explicit flag always wins over a variable.
type Config struct {
	Addr           string // server URL (MAYFLY_ADDR)
	CACertFile     string // PEM CA(s) to trust instead of the system roots (MAYFLY_CACERT)
	ClientCertFile string // PEM client certificate for admin mTLS (MAYFLY_CLIENT_CERT)
	ClientKeyFile  string // its PEM private key (MAYFLY_CLIENT_KEY)
	// Token is the admin token (MAYFLY_TOKEN), sent only by admin calls.
	// It is read from the environment only when AdminToken is true: in a
	// job, MAYFLY_TOKEN holds the job token, which must not be sent as an
	// admin credential.
	Token      string
	AdminToken bool
	// Timeout bounds each request (default DefaultTimeout).
	Timeout time.Duration
	// UserAgent is sent with every request (default "mayfly-cli").
	UserAgent string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// Transport, when set, replaces the TLS and dial set-up (tests); the
	// client still follows no redirect and applies its limits.
	Transport http.RoundTripper
}

// Client talks to one mayfly server. It is safe for concurrent use.
type Client struct {
	addr      string // normalised, no trailing "/"
	hc        *http.Client
	token     string
	timeout   time.Duration
	userAgent string
	hasCert   bool
	caFile    string // the CA file trusted, "" for the system's roots
}

// ErrNoAdminToken is returned by admin calls when no admin token was
// configured.
var ErrNoAdminToken = errors.New(EnvToken + " is not set: admin commands need an admin token (mfya_…), or sign in first with mayfly auth login")

// ErrBadAdminToken is returned when the configured admin token is not a
// well-formed mfya_ token.
var ErrBadAdminToken = errors.New(EnvToken + " does not hold a well-formed admin token (mfya_…)")

// New builds a client from c and the environment. It checks the address and
// reads the CA and client-certificate files now, so that a wrong path is
// reported before anything is sent.
func New(c Config) (*Client, error) {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	pick := func(v, env string) string {
		if v != "" {
			return v
		}
		return strings.TrimSpace(getenv(env))
	}
	addr, err := NormalizeAddr(pick(c.Addr, EnvAddr))
	if err != nil {
		return nil, err
	}
	cl := &Client{addr: addr, timeout: c.Timeout, userAgent: c.UserAgent}
	if cl.timeout <= 0 {
		cl.timeout = DefaultTimeout
	}
	if cl.userAgent == "" {
		cl.userAgent = "mayfly-cli"
	}
	if c.AdminToken {
		cl.token = pick(c.Token, EnvToken)
	} else {
		cl.token = c.Token
	}
	tr := c.Transport
	if tr == nil {
		certFile, keyFile := pick(c.ClientCertFile, EnvClientCert), pick(c.ClientKeyFile, EnvClientKey)
		cl.caFile = pick(c.CACertFile, EnvCACert)
		tlsCfg, err := TLSConfig(cl.caFile, certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cl.hasCert = len(tlsCfg.Certificates) > 0
		tr = &http.Transport{
			Proxy:                  Proxy,
			DialContext:            (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:        tlsCfg,
			TLSHandshakeTimeout:    10 * time.Second,
			ResponseHeaderTimeout:  cl.timeout,
			IdleConnTimeout:        90 * time.Second,
			MaxIdleConns:           4,
			MaxResponseHeaderBytes: 64 << 10,
			ForceAttemptHTTP2:      true,
		}
	}
	cl.hc = &http.Client{Transport: tr, CheckRedirect: noRedirect}
	return cl, nil
}

// noRedirect stops at a redirect: its request may carry a token or a
// secret, which must never be replayed to another URL.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// TLSConfig is TLS 1.2 or later, trusting only the CAs in caFile when one is
// given (else the system roots), presenting the client certificate in
// certFile and keyFile when given (both or neither).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := readPEM(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file (%s): %w", EnvCACert, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile == "" && keyFile == "":
	case certFile == "" || keyFile == "":
		return nil, fmt.Errorf("a client certificate needs both --client-cert and --client-key (%s and %s)", EnvClientCert, EnvClientKey)
	default:
		certPEM, err := readPEM(certFile)
		if err != nil {
			return nil, fmt.Errorf("reading the client certificate: %w", err)
		}
		// The admin's private key: refused when others may read it, as ssh
		// refuses such a key (keyfile.Read names the chmod to run).
		keyPEM, err := keyfile.Read(keyFile, maxPEMFile)
		if err != nil {
			return nil, fmt.Errorf("reading the client key: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		clear(keyPEM)
		if err != nil {
			// The error names no key material, only what did not fit.
			return nil, fmt.Errorf("client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func readPEM(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPEMFile)
	}
	return b, nil
}

// NormalizeAddr checks a server address: an absolute http(s) URL, plain http
// only to a loopback address (a token must never cross a network in the
// clear). It returns it without a trailing "/".
func NormalizeAddr(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("no server address: set " + EnvAddr + " or pass --addr")
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("server address %q is not an absolute http(s) URL", shownAddr(addr))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("server address %q may not carry user info, a query or a fragment", shownAddr(addr))
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return "", fmt.Errorf("server address %q: plain http is allowed only to a loopback address", shownAddr(addr))
	}
	return strings.TrimRight(addr, "/"), nil
}

// shownAddr is addr as an error may quote it (stderr, so a CI log): all up
// to its last "@" and all from a "?" or "#" hidden, where a password or a
// token may be, also when addr does not parse.
func shownAddr(addr string) string {
	s := addr
	if at := strings.LastIndex(s, "@"); at >= 0 {
		start := 0
		if i := strings.Index(s[:at], "://"); i >= 0 {
			start = i + len("://")
		}
		s = s[:start] + "xxxxx" + s[at:]
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i+1] + "xxxxx"
	}
	return s
}

// Proxy is http.ProxyFromEnvironment, except that plain http, which mayfly
// sends only to a loopback address, never goes through a proxy: there it
// would cross the network in the clear, tokens and all. (The environment's
// rule spares only loopback IPs and "localhost" in lower case.)
func Proxy(req *http.Request) (*url.URL, error) {
	if req.URL.Scheme == "http" {
		return nil, nil
	}
	return http.ProxyFromEnvironment(req)
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

// Addr is the server's address, normalised.
func (c *Client) Addr() string { return c.addr }

// GatewayURL is the gateway base: Addr() + "/gw".
func (c *Client) GatewayURL() string { return c.addr + "/gw" }

// RequireAdmin reports whether the client holds a well-formed admin token,
// so that a command can refuse before it reads input or sends anything.
func (c *Client) RequireAdmin() error {
	switch k, err := token.Parse(c.token); {
	case c.token == "":
		return ErrNoAdminToken
	case IsSessionToken(c.token):
		return nil // a signed-in human's session (mayfly auth login)
	case err == nil && k == token.Job:
		// Typically a shell that sourced `mayfly login --format env`.
		return fmt.Errorf("%w: it holds a job token (mfy_…); admin commands need an admin token: the one mayfly init printed, or one from mayfly admin token create", ErrBadAdminToken)
	case err != nil || k != token.Admin:
		return ErrBadAdminToken
	}
	return nil
}

// request is one call.
type request struct {
	op          string // names the action in errors: "secret put"
	method      string
	path        string // with query, relative to addr
	body        []byte
	contentType string
	auth        string // the Authorization header, "" for none
	header      http.Header
}

// send performs r and returns the response when it is 2xx; the caller
// closes its body and cancel. Anything else becomes an *Error or a
// *ConnError.
func (c *Client) send(ctx context.Context, r request) (*http.Response, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.addr+r.path, body)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s: %w", r.op, err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		return nil, nil, c.connErr(r.op, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, cancel, nil
	}
	defer cancel()
	defer resp.Body.Close()
	if resp.StatusCode/100 == 3 {
		return nil, nil, &ConnError{Op: r.op, Addr: c.addr, Err: fmt.Errorf("the server answered HTTP %d, a redirect to %s", resp.StatusCode, redirectTarget(resp)),
			Hint: "mayfly clients never follow redirects; set " + EnvAddr + " to the server's own URL"}
	}
	e := ReadError(resp)
	if e.Status == http.StatusBadRequest && e.plainToTLS {
		return nil, nil, &ConnError{Op: r.op, Addr: c.addr, Err: errors.New("the server speaks TLS (HTTPS) on this port"),
			Hint: "use https://" + strings.TrimPrefix(c.addr, "http://"), WrongScheme: true}
	}
	e.Op = r.op
	e.addrHint = c.pathHint(e)
	return nil, nil, e
}

// pathHint says to drop the path of an address that mayfly does not serve
// under: MAYFLY_GATEWAY (…/gw) given as MAYFLY_ADDR reaches the gateway,
// which refuses an admin token, and …/v1 finds no endpoint.
func (c *Client) pathHint(e *Error) string {
	u, err := url.Parse(c.addr)
	if err != nil || u.Path == "" || u.Path == "/" {
		return ""
	}
	if strings.HasSuffix(u.Path, "/gw") || (e.Code == "not_found" && e.Description == "no such endpoint") {
		return "is " + EnvAddr + " (or --addr) the server's URL? give it without the path " + u.Path
	}
	return ""
}

// redirectTarget names where a redirect pointed, without its query (which
// may carry anything).
func redirectTarget(resp *http.Response) string {
	loc, err := resp.Location()
	if err != nil {
		return "(no Location)"
	}
	loc.RawQuery, loc.Fragment, loc.User = "", "", nil
	return loc.String()
}

// admin returns the Authorization header of an admin call.
func (c *Client) admin() (string, error) {
	if err := c.RequireAdmin(); err != nil {
		return "", err
	}
	return "Bearer " + c.token, nil
}

// doJSON sends r and decodes a JSON answer into out (nil: discard).
func (c *Client) doJSON(ctx context.Context, r request, out any) error {
	resp, cancel, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	lr := io.LimitReader(resp.Body, MaxJSONResponse+1)
	if out == nil {
		_, _ = io.Copy(io.Discard, lr)
		return nil
	}
	b, err := io.ReadAll(lr)
	if err != nil {
		return c.connErr(r.op+": reading the answer", err)
	}
	if len(b) > MaxJSONResponse {
		return fmt.Errorf("%s: the server's answer is larger than %d bytes", r.op, MaxJSONResponse)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: unexpected answer from the server: %v", r.op, err)
	}
	return nil
}

// doRaw sends r and returns its body, at most max bytes.
func (c *Client) doRaw(ctx context.Context, r request, max int64) ([]byte, http.Header, error) {
	resp, cancel, err := c.send(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	defer cancel()
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, nil, c.connErr(r.op+": reading the answer", err)
	}
	if int64(len(b)) > max {
		return nil, nil, fmt.Errorf("%s: the server's answer is larger than %d bytes", r.op, max)
	}
	return b, resp.Header, nil
}

func (c *Client) adminJSON(ctx context.Context, op, method, path string, in, out any) error {
	auth, err := c.admin()
	if err != nil {
		return err
	}
	r := request{op: op, method: method, path: path, auth: auth}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		r.body, r.contentType = b, "application/json"
	}
	err = c.doJSON(ctx, r, out)
	clear(r.body) // may hold a secret's value
	return err
}

func (c *Client) adminRaw(ctx context.Context, op, path string, max int64) ([]byte, http.Header, error) {
	auth, err := c.admin()
	if err != nil {
		return nil, nil, err
	}
	return c.doRaw(ctx, request{op: op, method: http.MethodGet, path: path, auth: auth}, max)
}

// Error is a refusal from the server in SPEC section 4's error shape.
type Error struct {
	Op          string // the action, "" when unknown
	Status      int
	Code        string
	Description string
	// Check names the control-plane check that failed (apitype.Check…).
	Check string
	// RetryAfter is the wait a 429 or 503 asked for (its Retry-After
	// header, at most maxRetryAfter); 0 when it named none.
	RetryAfter time.Duration

	plainToTLS bool
	addrHint   string // the address looks wrong: why
}

// notMayfly reports a 404 or 405 without mayfly's error shape, which every
// such refusal of a mayfly server has: another server answered (a wrong
// address, the metrics listener, a proxy's own page). Other plain-text 4xx
// answers (400, 431) may come from Go's HTTP layer in mayfly itself.
func (e *Error) notMayfly() bool {
	return e.Code == "" && (e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed)
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
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
	if e.notMayfly() {
		b.WriteString("; the answer is not a mayfly server's: is " + EnvAddr + " (or --addr) the URL of its API listener (not the metrics listener, nor the gateway's /gw)?")
	}
	if h := e.Hint(); h != "" && e.addrHint == "" {
		b.WriteString("; ")
		b.WriteString(h)
	}
	if e.addrHint != "" {
		b.WriteString("; ")
		b.WriteString(e.addrHint)
	}
	return b.String()
}

// Hint says what to do about a control-plane refusal, from the check the
// server names.
func (e *Error) Hint() string {
	switch e.Check {
	case apitype.CheckNetwork:
		return "run the command from a network in the server's admin_cidrs, or add this address there"
	case apitype.CheckClientCertificate:
		return "the server requires an admin client certificate: pass --client-cert and --client-key (or set " + EnvClientCert + " and " + EnvClientKey + ")"
	case apitype.CheckToken:
		return "is " + EnvToken + " a live admin token (or, without it, your mayfly auth login session)?"
	case apitype.CheckRole:
		return "ask an admin for a token with that role (mayfly admin token create NAME --role ROLE)"
	}
	return ""
}

// Refused reports whether the server said no to this request (a 4xx other
// than 429, in mayfly's error shape): the caller's negative answer, not a
// failure of the environment such as a wrong address.
func (e *Error) Refused() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests && !e.notMayfly()
}

// goTLSRefusal is what Go's TLS server answers a plain-HTTP request with.
const goTLSRefusal = "Client sent an HTTP request to an HTTPS server"

// ReadError turns a non-2xx response into an *Error; the code and
// description are reduced to one printable line each.
func ReadError(resp *http.Response) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	var v apitype.Error
	if json.Unmarshal(body, &v) == nil {
		e.Code, e.Description, e.Check = OneLine(v.Error, 64), OneLine(v.Description, 300), OneLine(v.Check, 32)
	} else if bytes.HasPrefix(body, []byte(goTLSRefusal)) {
		e.plainToTLS = true
	}
	return e
}

// maxRetryAfter bounds the wait a server's Retry-After can impose.
const maxRetryAfter = time.Minute

// retryAfter reads a Retry-After value: delay seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(max(n, 0)) * time.Second
		if n > int(maxRetryAfter/time.Second) {
			d = maxRetryAfter
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), maxRetryAfter)
}

// ConnError is a failure to talk to the server at all (or a server that
// is not one): unreachable, untrusted, the wrong scheme, a redirect.
type ConnError struct {
	Op, Addr string
	Err      error
	Hint     string
	// WrongScheme: http:// to a TLS port, or https:// to a plain one.
	WrongScheme bool
}

func (e *ConnError) Error() string {
	msg := fmt.Sprintf("%s: cannot reach %s: %s", e.Op, e.Addr, OneLine(e.Err.Error(), 300))
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

func (e *ConnError) Unwrap() error { return e.Err }

// connErr describes a transport failure, with a hint where one helps. The
// URL is dropped from it: it may carry a query.
func (c *Client) connErr(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, context.Canceled)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	ce := &ConnError{Op: op, Addr: c.addr, Err: err}
	var ca x509.UnknownAuthorityError
	var hn x509.HostnameError
	var rec tls.RecordHeaderError
	var alert tls.AlertError
	var dns *net.DNSError
	msg := err.Error()
	switch {
	case errors.As(err, &ca):
		ce.Err = errors.New("the server's certificate is not signed by a trusted CA")
		ce.Hint = "set " + EnvCACert + " (or --cacert) to the CA file, e.g. DATA_DIR/ca.pem"
		if c.caFile != "" {
			ce.Hint = "the CA in " + c.caFile + " (" + EnvCACert + " or --cacert) did not sign it: use the ca.pem of this server's data dir"
		}
	case errors.As(err, &hn):
		ce.Hint = "the certificate does not name this host: use a name or address it was made for, or add this one on the server with mayfly tls renew --data-dir DIR --tls-san NAME, then reload it (SIGHUP)"
	case errors.As(err, &rec), strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		ce.Err = errors.New("the server speaks plain HTTP on this port")
		ce.Hint = "use http://" + strings.TrimPrefix(c.addr, "https://")
		ce.WrongScheme = true
	case errors.As(err, &alert) || strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority"):
		if c.hasCert {
			ce.Hint = "the server refused the client certificate: is it signed by the server's admin_client_ca, and still valid?"
		} else {
			ce.Hint = "the server may require a client certificate: pass --client-cert and --client-key (or " + EnvClientCert + " and " + EnvClientKey + ")"
		}
	case errors.Is(err, context.DeadlineExceeded):
		ce.Err = fmt.Errorf("no answer within %s", c.timeout)
	case errors.Is(err, syscall.ECONNREFUSED), strings.Contains(msg, "actively refused"): // the second: Windows' WSAECONNREFUSED
		// The common first-day mistake: the server is not started, or
		// listens elsewhere.
		ce.Hint = "is mayfly server running there? Check " + EnvAddr + " (or --addr): host, port and scheme"
	case errors.As(err, &dns):
		ce.Hint = "check the host name in " + EnvAddr + " (or --addr)"
	case strings.HasPrefix(c.addr, "http://") && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) && speaksTLS(c.addr):
		// A TLS server that does not answer plain HTTP with Go's 400
		// just hangs up: say why.
		ce.Err = errors.New("the server speaks TLS (HTTPS) on this port")
		ce.Hint = "use https://" + strings.TrimPrefix(c.addr, "http://")
		ce.WrongScheme = true
	}
	return ce
}

// speaksTLS reports whether a TLS handshake succeeds with the server of an
// http:// address. It is a probe only: the certificate is not checked
// because nothing is sent over the connection, which is closed at once.
func speaksTLS(addr string) bool {
	u, err := url.Parse(addr)
	if err != nil {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second},
		Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // a probe that sends nothing
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// OneLine makes s safe to print as part of one line: control and format
// characters (bidi overrides, zero-width) become spaces, runs of space
// collapse, and it is cut at max runes.
func OneLine(s string, max int) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
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
