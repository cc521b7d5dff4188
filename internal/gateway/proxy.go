package gateway

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/mask"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// upstreamTransport is the tuned transport of one upstream, rebuilt when
// the upstream's url, CA file or timeout changes.
// transportKey is what an upstream's transport is built from.
type transportKey struct {
	url, caFile string
	timeout     time.Duration
}

type upstreamTransport struct {
	key  transportKey
	base *url.URL
	tr   *http.Transport
}

// maxCAFile bounds an upstream's ca_file (a system bundle is about 0.2 MiB).
const maxCAFile = 4 << 20

// readCAFile reads an upstream's ca_file whole: a regular file of at most
// maxCAFile bytes. The policy names it and transport reads it under g.mu,
// which every request takes: a FIFO held them all until written to (its
// open blocks, hence the stat first), a device (/dev/zero) or a huge file
// grew memory without bound.
func readCAFile(name string) ([]byte, error) {
	if st, err := os.Stat(name); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name) // replaced since the stat
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCAFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxCAFile)
	}
	return b, nil
}

func (g *Gateway) transport(up *policy.Upstream) (*upstreamTransport, error) {
	key := transportKey{up.URL, up.CAFile, up.Timeout}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := g.transports[up.Name]; t != nil && t.key == key {
		return t, nil
	}
	base, err := url.Parse(up.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("gateway: upstream %s: bad url", up.Name)
	}
	base.Path = strings.TrimRight(base.Path, "/")
	base.RawPath = strings.TrimRight(base.RawPath, "/")
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12} // verification always on
	if up.CAFile != "" {
		pem, err := readCAFile(up.CAFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: upstream %s: reading ca_file: %w", up.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("gateway: upstream %s: ca_file %s holds no PEM certificate", up.Name, up.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	rht := g.cfg.ResponseHeaderTimeout
	if up.Timeout > 0 {
		rht = up.Timeout
	}
	d := &net.Dialer{Timeout: g.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                  nil, // explicit: no proxy from the environment sees the credential
		DialContext:            d.DialContext,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    g.cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout:  rht,
		IdleConnTimeout:        g.cfg.IdleConnTimeout,
		MaxIdleConnsPerHost:    g.cfg.MaxIdleConnsPerHost,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		ForceAttemptHTTP2:      true,
		// The gateway asks for gzip itself and decodes it itself, after
		// looking at every Content-Encoding value (contentCodings): the
		// transport's own decoding looks at the first value only.
		DisableCompression: true,
	}
	if old := g.transports[up.Name]; old != nil {
		old.tr.CloseIdleConnections()
	}
	t := &upstreamTransport{key: key, base: base, tr: tr}
	g.transports[up.Name] = t
	return t, nil
}

// credential is an upstream credential ready to set, and the values to mask.
type credential struct {
	version int
	header  string   // canonical
	value   string   // prefix and secret
	values  []string // {value}: one slice for every request's header
	secrets [][]byte // secretValues of the secret
}

type credKey struct{ secret, header, prefix string }

// credential reveals the upstream's secret for this request; the header
// value and the forms to mask are kept while the secret is unchanged. A
// minting upstream's credential is the grant's shared one.
func (g *Gateway) credential(ctx context.Context, up *policy.Upstream, grant *policy.Grant) (*credential, error) {
	if up.Minted() {
		return g.mintedCredential(ctx, up, grant)
	}
	v, ver, err := g.cfg.Secrets.Reveal(ctx, up.Credential.Secret)
	if err != nil {
		return nil, err
	}
	if len(v) < mask.MinSecretLen {
		// It could not be masked in responses without masking common words.
		return nil, fmt.Errorf("secret shorter than %d bytes", mask.MinSecretLen)
	}
	header := up.Credential.Header
	if header == "" {
		header = "Authorization"
	}
	key := credKey{up.Credential.Secret, header, up.Credential.Prefix}
	g.mu.Lock()
	c := g.creds[key]
	g.mu.Unlock()
	if c != nil && c.version == ver && subtle.ConstantTimeCompare([]byte(c.value[len(key.prefix):]), v) == 1 {
		return c, nil
	}
	value := up.Credential.Prefix + string(v)
	for i := 0; i < len(value); i++ {
		if b := value[i]; b < 0x20 && b != '\t' || b == 0x7f {
			return nil, errors.New("the secret holds characters a header cannot carry")
		}
	}
	secrets := secretValues(v)
	// During a rotation's grace period the replaced value may still work
	// upstream: responses are masked for it too. Read once per version.
	if pr, ok := g.cfg.Secrets.(previousRevealer); ok {
		if pv, _, err := pr.RevealPrevious(ctx, up.Credential.Secret); err == nil {
			if len(pv) >= mask.MinSecretLen {
				secrets = append(secrets, secretValues(pv)...)
			}
			clear(pv)
		}
	}
	c = &credential{version: ver, header: http.CanonicalHeaderKey(header), value: value, values: []string{value}, secrets: secrets}
	g.mu.Lock()
	g.creds[key] = c
	g.mu.Unlock()
	return c, nil
}

// mintedCredential is credential for a minting upstream: the grant's
// shared credential, sent as "Authorization: token …" (GitHub's form).
func (g *Gateway) mintedCredential(ctx context.Context, up *policy.Upstream, grant *policy.Grant) (*credential, error) {
	if g.cfg.Minted == nil || grant == nil || up.Kind() != policy.KindGitHubApp {
		return nil, fmt.Errorf("upstream %s: no gateway credential for a %s upstream", up.Name, up.Kind())
	}
	v, id, err := g.cfg.Minted.SharedCredential(ctx, up, grant)
	if err != nil {
		return nil, err
	}
	key := credKey{secret: "minted:" + id, header: "Authorization", prefix: up.Credential.Prefix}
	g.mu.Lock()
	c := g.creds[key]
	g.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if len(v) < mask.MinSecretLen {
		return nil, fmt.Errorf("minted credential shorter than %d bytes", mask.MinSecretLen)
	}
	value := up.Credential.Prefix + v
	for i := 0; i < len(value); i++ {
		if b := value[i]; b < 0x20 || b == 0x7f {
			return nil, errors.New("the minted credential holds characters a header cannot carry")
		}
	}
	c = &credential{header: "Authorization", value: value, values: []string{value}, secrets: secretValues([]byte(v))}
	slot := up.Name + "\x00" + grant.Name
	g.mu.Lock()
	if old, ok := g.minted[slot]; ok && old != key {
		delete(g.creds, old) // replaced by a refresh
	}
	g.minted[slot] = key
	g.creds[key] = c
	g.mu.Unlock()
	return c, nil
}

// redactor returns the masker of a credential and a job token, built once
// for all the token's requests while both are unchanged.
func (g *Gateway) redactor(cred *credential, tok string) (*redactor, error) {
	k := redactorKey{cred, tok}
	g.rmu.Lock()
	r := g.redactors[k]
	g.rmu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := newRedactor(append(slices.Clip(cred.secrets), []byte(tok)))
	if err != nil {
		return nil, err
	}
	m := r.m
	g.rmu.Lock()
	if old := g.redactors[k]; old != nil {
		g.rmu.Unlock()
		return old, nil // built meanwhile by another request
	}
	// Tokens live minutes: dropping arbitrary entries (map order) when the
	// cache is full is cheaper than tracking age, and a dropped one is
	// only built again.
	for kk, rr := range g.redactors {
		if g.redactorBytes+m.Size() <= maxMatcherBytes {
			break
		}
		g.redactorBytes -= rr.m.Size()
		delete(g.redactors, kk)
	}
	g.redactors[k] = r
	g.redactorBytes += m.Size()
	g.rmu.Unlock()
	return r, nil
}

type redactorKey struct {
	cred *credential
	tok  string
}

// forward sends the checked request to the upstream and streams the answer
// back, masked; then it records the request's outcome.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, rq *request, up *policy.Upstream, ut *upstreamTransport,
	cred *credential, red *redactor, clean string, in *auditlog.Intent) {
	f := &forwarding{g: g, r: r, rq: rq, up: up, base: ut.base, cred: cred, clean: clean, red: red}
	f.rw = respWriter{ResponseWriter: w, red: f.red, f: f}
	f.rw.preset.keep(w.Header())
	f.rp = httputil.ReverseProxy{
		Transport: ut.tr,
		// Streams (SSE, unknown length) are flushed at every write by
		// the proxy itself; a body of known length when the upstream
		// pauses (respWriter). Not at every write, nor on a timer: one
		// write(2) for a small response's header and body, and no timer
		// per response.
		BufferPool:     &g.bufPool,
		Rewrite:        f.rewrite,
		ModifyResponse: f.modifyResponse,
		ErrorHandler:   f.errorHandler,
	}
	// The request carries the credential's authority, which must end with
	// the token's: a response still streaming (an event stream, a watch, a
	// long download or upload) or an upgraded connection is cut once the
	// token is revoked or expires (watch). The proxy's request has a
	// context of its own for that; f.r keeps the client's.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	f.watch(cancel)
	defer f.finish(in)
	f.rp.ServeHTTP(&f.rw, r.WithContext(ctx))
}

// forwarding is one forwarded request's state, shared by the proxy's
// callbacks: one allocation rather than one per callback and variable.
type forwarding struct {
	g        *Gateway
	r        *http.Request
	rq       *request
	up       *policy.Upstream
	base     *url.URL
	cred     *credential
	clean    string
	red      *redactor
	rw       respWriter
	body     countReader
	rp       httputil.ReverseProxy
	upStatus int
	failure  string
	big      bool        // counted in Gateway.bigBodies
	ws       *wsMasker   // an upgraded connection's upstream end
	gz       *gunzipBody // a gzip body being decoded

	// The token's watcher (watch): a timer that looks at the token every
	// tunnelCheck while the request runs, and cut, why it ended the
	// request (nil while it has not). finish stops it.
	watchMu sync.Mutex
	watcher *time.Timer
	stopped bool
	cut     error
}

// tunnelCheck is how often a forwarded request's token is looked at while
// the request runs: with the lease poller's 250 ms, a revocation anywhere
// in the cluster ends it within SPEC section 4's one second.
const tunnelCheck = 250 * time.Millisecond

// watch ends the request (stop cancels the proxy's request: the upstream
// connection is closed, and with it an upgraded connection or the body
// being copied) once its token is revoked or expires, or the policy in
// force no longer allows it (stillAllowed). A timer rather than
// a goroutine per request: most requests end before it first fires. It
// looks again every tunnelCheck rather than at the expiry: renewals move
// the expiry, and revocations are seen by polling the view.
func (f *forwarding) watch(stop func()) {
	leases, l := f.g.cfg.Leases, f.rq.live
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	f.watcher = time.AfterFunc(tunnelCheck, func() {
		f.watchMu.Lock()
		defer f.watchMu.Unlock()
		if f.stopped {
			return
		}
		if err := leases.Ended(l); err != nil {
			f.cut = err
			stop()
			return
		}
		if err := f.stillAllowed(); err != nil {
			f.cut = err
			stop()
			return
		}
		f.watcher.Reset(tunnelCheck)
	})
}

// policyNarrowed is why the watcher cut a request that the policy in force
// no longer allows.
type policyNarrowed struct{ why string }

func (e *policyNarrowed) Error() string { return "policy no longer allows it: " + e.why }

// stillAllowed is Gateway.stillAllowed for the running request. Under
// watchMu.
func (f *forwarding) stillAllowed() error { return f.g.stillAllowed(f.rq, f.r.Method, f.clean) }

// stillAllowed decides request rq (method on clean) again, as ServeHTTP
// did, when the policy in force is not the one it was decided under: a
// policy apply revokes the tokens of the grants it removes (Leases.Ended),
// not the requests a grant it narrows no longer allows. Before the forward
// (after the audit wait) and while the request runs (the watcher).
func (g *Gateway) stillAllowed(rq *request, method, clean string) error {
	p := g.cfg.Policies.Current()
	if p == rq.pol {
		return nil
	}
	if p == nil {
		return &policyNarrowed{"no policy loaded"}
	}
	methods, paths := append([]string{method}, rq.overrides...), []string{clean}
	if rq.dest != "" {
		paths = append(paths, rq.dest)
	}
	if dec := p.AuthorizeAll(holderOf(rq.live), rq.addr, rq.ev.Upstream, methods, paths, rq.also...); dec.Reason != policy.Allowed {
		return &policyNarrowed{dec.Reason.String()}
	}
	rq.pol = p // allowed under this version too: decided again only when it changes
	return nil
}

// unwatch stops the watcher and returns why it ended the request, if it did.
func (f *forwarding) unwatch() error {
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	if f.watcher != nil && !f.stopped {
		f.stopped = true
		f.watcher.Stop()
	}
	return f.cut
}

// ended is why the watcher ended the request, nil while it has not.
func (f *forwarding) ended() error {
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	return f.cut
}

func (f *forwarding) rewrite(pr *httputil.ProxyRequest) {
	out, base := pr.Out, f.base
	out.URL.Scheme = base.Scheme
	out.URL.Host = base.Host
	out.URL.Path = base.Path + f.clean
	out.URL.RawPath = base.EscapedPath() + policy.EscapePath(f.clean)
	out.URL.RawQuery = f.r.URL.RawQuery
	out.URL.Fragment, out.URL.RawFragment = "", ""
	out.Host = ""
	h := out.Header
	h.Del("Authorization")
	h.Del("Proxy-Authorization")
	h.Del("Dpop")
	dropOwnCookies(h)
	// Path-override headers (IIS URL Rewrite, some Symfony and Zend
	// setups) would let an upstream serve a path the policy never checked,
	// under any spelling; so would a second credential or framing header
	// spelled with "_".
	scrubHeaders(h, headerKey(f.cred.header))
	if !f.up.ForwardRanges {
		// A part of a response that reflects the credential would carry
		// a piece of it the masker cannot recognise (policy.Upstream).
		// Apache httpd also honours the older Request-Range.
		h.Del("Range")
		h.Del("If-Range")
		h.Del("Request-Range")
	}
	if f.rq.dest != "" {
		// Checked against the policy (destination.go); now the
		// upstream's URL of that path.
		d := url.URL{Scheme: base.Scheme, Host: base.Host, Path: base.Path + f.rq.dest,
			RawPath: base.EscapedPath() + policy.EscapePath(f.rq.dest)}
		h.Set("Destination", d.String())
	}
	// A request's trailers arrive after its body, so after the checks:
	// some servers merge them into the headers (Apache's MergeTrailers),
	// where an override, a path or a token in them would count. They are
	// not forwarded.
	out.Trailer = nil
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, f.rq.tok) {
				delete(h, k)
				break
			}
		}
	}
	// Ask for gzip, which the gateway decodes, or nothing (contentCodings),
	// so that every body can be inspected; likewise no WebSocket
	// compression, so that every frame can be.
	h["Accept-Encoding"] = acceptGzip
	h.Del("Sec-Websocket-Extensions")
	h[f.cred.header] = f.cred.values // canonical; never changed downstream
	if out.Body != nil && out.Body != http.NoBody {
		f.body.r = out.Body
		out.Body = &f.body
	}
}

func (f *forwarding) modifyResponse(resp *http.Response) error {
	f.upStatus = resp.StatusCode
	red := f.red
	red.maskHeader(resp.Header)
	f.fitOrigin(resp.Header)
	sandbox(resp.Header)
	// Trailer names are known now (their values once the body has ended):
	// one holding a secret must not even be announced.
	red.maskHeader(resp.Trailer)
	dropFramingTrailers(resp.Trailer)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The proxy copies the upgraded connection from the response
		// body: mask the upstream's frames as they pass.
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			f.ws = newWSMasker(rwc, red.m)
			resp.Body = f.ws
		}
		return nil
	}
	// A gzip body is decoded to be masked, and encoded again for a
	// client that takes gzip (as the upstream's headers said, also when
	// there is no body: HEAD, 304).
	regzip := singleGzip(resp.Header) && acceptsGzip(f.r.Header)
	if err := decodeBody(resp, f.g.cfg.MaxGzipRatio); err != nil {
		return err // a range of a gzip body among them, with its own reason
	}
	f.gz, _ = resp.Body.(*gunzipBody)
	if !f.up.ForwardRanges && (resp.StatusCode == http.StatusPartialContent || len(resp.Header["Content-Range"]) > 0) {
		// No range was forwarded, yet the upstream sent a part: it may
		// hold a piece of a reflected credential too short to mask.
		resp.Body.Close()
		return errUnaskedRange
	}
	if regzip {
		resp.Header.Set("Content-Encoding", "gzip")
		addVary(resp.Header)
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		// Even with a declared length of 0: trailers may still follow
		// (HTTP/2), and are masked once the body ends.
		pool := &f.g.bufPool
		if resp.ContentLength >= bigBody && f.g.bigBodies.Add(1) <= maxBigBodies {
			// Large reads and writes (bigBufSize); the proxy's copy
			// takes its buffer from here too. Not for bodies of unknown
			// length: a stream may stay open for hours. At most
			// maxBigBodies at once, so that many large downloads cost
			// no more memory than before beyond that.
			pool = &f.g.bigPool
			f.rp.BufferPool = pool
			f.big = true
		} else if resp.ContentLength >= bigBody {
			f.g.bigBodies.Add(-1)
		}
		mb := newMaskBody(resp.Body, red.m, pool, resp.ContentLength > 0, func() {
			dropFramingTrailers(resp.Trailer)
			red.maskHeader(resp.Trailer)
		})
		resp.Body, f.rw.body = mb, mb
		if regzip {
			resp.Body = newGzipBody(mb, &f.g.gzipPool, &f.g.bufPool)
		}
	}
	return nil
}

// fitOrigin makes an upstream's response header h fit mayfly's origin,
// on which every answer comes: mayfly's cookies dropped, the others made
// host-only and scoped to the route, the origin's policies and a front
// proxy's directives removed, the URLs a client follows mapped onto the
// route (fitURLs), its challenges renamed (renameChallenges). For the final answer and for each
// informational one (a 103's Set-Cookie goes into a client's cookie jar
// too).
func (f *forwarding) fitOrigin(h http.Header) {
	dropOwnSetCookies(h)
	route := f.g.cfg.Prefix + f.up.Name
	scopeCookies(h, route, f.base.Path, requestPath(f.r) == route)
	dropOriginPolicies(h)
	dropFrontProxyDirectives(h)
	f.fitURLs(h)
	renameChallenges(h)
}

// upstreamChallenge is where an upstream's WWW-Authenticate goes.
const upstreamChallenge = "X-Upstream-Www-Authenticate"

// renameChallenges moves the upstream's authentication challenges to
// X-Upstream-WWW-Authenticate, whatever the status. On mayfly's origin a
// Basic (Digest, NTLM, Negotiate) one makes a browser prompt and then send
// what was typed with every route's requests; and SPEC section 5 makes a
// challenge on a gateway answer mayfly's (401 invalid_token), which a job's
// client would take as its token refused. The job never answers an
// upstream's challenge: mayfly injects the credential.
func renameChallenges(h http.Header) {
	if v, ok := h["Www-Authenticate"]; ok {
		delete(h, "Www-Authenticate")
		h[upstreamChallenge] = append(h[upstreamChallenge], v...)
	}
}

// originPolicies are response headers a browser acts on for the whole
// origin, and mostly keeps long after the answer: Clear-Site-Data clears
// the console's cookies (signing the admin out), storage and cache; NEL
// with Report-To has it report the URLs of the origin's requests to a
// collector for as long as the upstream says; Alt-Svc sends the origin's
// traffic to another host; Strict-Transport-Security could turn mayfly's
// own HSTS off (max-age=0) or onto every subdomain. A gateway answer comes
// on the console's origin, so these are mayfly's to set, never an
// upstream's.
var originPolicies = [...]string{"Clear-Site-Data", "Nel", "Report-To", "Alt-Svc", "Strict-Transport-Security"}

func dropOriginPolicies(h http.Header) {
	for _, k := range originPolicies {
		delete(h, k)
	}
}

// dropFrontProxyDirectives removes the response headers that a proxy in
// front of mayfly (README: public_url behind a proxy) acts on instead of
// passing on: nginx's X-Accel-* (X-Accel-Redirect is an internal redirect
// to any of its locations, `internal` ones too), and the X-Sendfile of
// Apache's mod_xsendfile and lighttpd (X-LIGHTTPD-send-file), which serve a
// file of that machine, mayfly's keys among them. Such a header would be
// mayfly's instruction, and mayfly never gives one. Under any case, "_"
// for "-"; it does not allocate.
func dropFrontProxyDirectives(h http.Header) {
	for k := range h {
		if len(k) > 2 && (k[0] == 'X' || k[0] == 'x') &&
			(hasPrefixKey(k, "x-accel-") || hasPrefixKey(k, "x-sendfile") || hasPrefixKey(k, "x-lighttpd-send-")) {
			delete(h, k)
		}
	}
}

// hasPrefixKey reports whether header name k starts with p (lower case)
// once folded as headerKey folds it.
func hasPrefixKey(k, p string) bool {
	if len(k) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		if foldKeyByte(k[i]) != p[i] {
			return false
		}
	}
	return true
}

// errUnaskedRange refuses a partial response from an upstream that was
// sent no range (ranges are not forwarded to it).
var errUnaskedRange = errors.New("gateway: upstream sent a range it was not asked for")

func (f *forwarding) errorHandler(ew http.ResponseWriter, er *http.Request, err error) {
	status, code, desc := http.StatusBadGateway, "bad_gateway", "the upstream could not be reached"
	var ne net.Error
	var ee *encodingError
	switch {
	case errors.As(err, &ee):
		desc = "the upstream answered in a content encoding the gateway cannot inspect (" + ee.why + ")"
		f.failure = "encoding: " + ee.why
	case errors.Is(err, errUnaskedRange):
		desc = "the upstream answered with a part of its response (206 or Content-Range) although no range was forwarded"
		f.failure = "range: not asked for"
	case f.ended() != nil:
		// The token ended, or the policy stopped allowing the request,
		// before the upstream answered (finish says so in the entry). A
		// body still coming is not read on: answer and close, as a
		// refusal does (answer).
		ew.Header().Set("Connection", "close")
		var pn *policyNarrowed
		if cut := f.ended(); errors.As(cut, &pn) {
			writeError(ew, http.StatusForbidden, "insufficient_scope", cut.Error(), `Bearer error="insufficient_scope"`)
		} else {
			sch := "Bearer"
			if f.rq.live.JKT != "" {
				sch = "DPoP"
			}
			writeError(ew, http.StatusUnauthorized, "invalid_token", cut.Error(), sch+` error="invalid_token"`)
		}
		http.NewResponseController(ew).SetReadDeadline(time.Unix(1, 0))
		return
	case f.r.Context().Err() != nil:
		f.failure = "client_gone"
		f.rw.status = 499 // client closed the request: nothing to answer
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		status, code, desc = http.StatusGatewayTimeout, "gateway_timeout", "the upstream did not answer in time"
		f.failure = "timeout"
	default:
		f.failure = "unreachable"
	}
	// Masked: Go's transport quotes a malformed response line, which an
	// upstream may have filled with the credential it was sent.
	f.g.log.Warn("gateway: upstream failed", "upstream", f.up.Name, "status", status,
		"err", f.red.m.MaskStringTail(err.Error(), mask.MinSecretLen))
	writeError(ew, status, code, desc, "")
}

// finish records the request's outcome (deferred: also after a panic,
// which it passes on).
func (f *forwarding) finish(in *auditlog.Intent) {
	p := recover()
	g, rq, rw := f.g, f.rq, &f.rw
	if f.big {
		g.bigBodies.Add(-1)
	}
	cut := f.unwatch()
	status := rw.status
	if status == 0 {
		status = f.upStatus
	}
	if status == 0 {
		status = http.StatusBadGateway
	}
	if f.gz != nil && f.gz.cut {
		f.failure = fmt.Sprintf("encoding: gzip body cut: decoded to more than %d times its size", f.gz.ratio)
	}
	if cut != nil {
		if status == http.StatusSwitchingProtocols {
			f.failure = "tunnel closed: " + cut.Error()
		} else {
			f.failure = "stream closed: " + cut.Error()
		}
	}
	dur := g.cfg.Now().Sub(rq.start)
	bytesIn, bytesOut := f.body.n.Load(), rw.n
	if f.ws != nil {
		bytesIn += f.ws.sent.Load()
		bytesOut += f.ws.recv.Load()
	}
	// The request's entry: the decision with its outcome; or, when the
	// decision already has an entry, the outcome pointing at it.
	whole := rq.ev
	whole.Status, whole.BytesIn, whole.BytesOut, whole.DurationMS = status, bytesIn, bytesOut, dur.Milliseconds()
	if f.failure != "" {
		whole.Reason = f.failure
	}
	if p != nil {
		whole.Detail = maps.Clone(rq.ev.Detail) // shared (allowDetail): never changed in place
		whole.Detail["aborted"] = true
	}
	g.m.observe(rq.upLabel, status, dur, bytesIn, bytesOut)
	if p == nil {
		// The decision was recorded before the upstream saw a byte; the
		// outcome need not hold up the answer it describes.
		rw.complete(f.r)
	}
	// Not awaited, and no goroutine per request to watch it: a failed
	// append marks the log unhealthy (new requests get 503, /readyz
	// fails) and counts in mayfly_audit_append_errors_total. Where the
	// decision has an entry of its own, the outcome is a TypeResponse
	// entry beside it (audit.Outcome). Still before the handler returns,
	// so that a graceful shutdown (which waits for handlers) never closes
	// the log before it.
	g.cfg.Auditor.Finish(in, whole, TypeResponse)
	if p != nil {
		panic(p)
	}
}

// respWriter records the status and bytes sent, and masks the headers of
// informational (1xx) responses and fits them to mayfly's origin.
type respWriter struct {
	http.ResponseWriter
	red    *redactor
	f      *forwarding  // the request it answers (fitOrigin)
	body   *maskBody    // the response body being copied, once known
	preset presetHeader // set before the proxy ran (nosniff, no-store, HSTS)
	wiped  bool         // an informational response cleared them
	sent   bool         // the final header went to the ResponseWriter
	status int
	n      int64
}

func (w *respWriter) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.red.maskHeader(w.Header())
		w.f.fitOrigin(w.Header())
		// ReverseProxy clears the header map after each 1xx it relays,
		// taking the security headers set before it with it.
		w.wiped = true
	} else if w.status == 0 {
		w.status = code
		if w.wiped {
			w.preset.restore(w.Header())
		}
	}
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.sent = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.sent = true
	// Each write may wait WriteStall for the client to read: renewed
	// here, so a stream's pauses upstream never count.
	if stall := w.f.g.cfg.WriteStall; stall > 0 {
		w.f.rq.rc.SetWriteDeadline(time.Now().Add(stall))
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	if err == nil && w.body != nil && w.body.short {
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
	}
	return n, err
}

// complete sends what net/http still buffers of a response the client can
// tell is whole without more from the server: HTTP/1 with a declared
// Content-Length (also for a HEAD, 204 or 304 answer). net/http would send
// it only once the handler returns. Any other answer (chunked, HTTP/2,
// upgraded) ends only when the handler returns: flushing it early would
// cost a write and gain nothing.
func (w *respWriter) complete(r *http.Request) {
	if !w.sent || r.ProtoMajor != 1 || w.status == http.StatusSwitchingProtocols {
		return
	}
	if _, ok := w.Header()["Content-Length"]; !ok && w.status != http.StatusNoContent && w.status != http.StatusNotModified && r.Method != http.MethodHead {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// presetHeader keeps the header set before the proxy ran, for an answer
// whose informational responses cleared it (respWriter.WriteHeader). Most
// answers have none: the few headers the API sets are kept in place, by
// reference, rather than cloned for every request (two allocations on the
// way to the upstream). The values are safe to share: until the final
// WriteHeader restores them, nothing writes into them but the masker of a
// 1xx, which would only mask them.
type presetHeader struct {
	n    int
	kv   [4]presetValues
	more http.Header // a header of more keys than kv holds: cloned
}

type presetValues struct {
	k string
	v []string
}

func (p *presetHeader) keep(h http.Header) {
	if len(h) > len(p.kv) {
		p.more = h.Clone()
		return
	}
	for k, v := range h {
		p.kv[p.n] = presetValues{k, v}
		p.n++
	}
}

// restore puts the kept values first in h, before those set since.
func (p *presetHeader) restore(h http.Header) {
	for _, kv := range p.kv[:p.n] {
		h[kv.k] = append(slices.Clone(kv.v), h[kv.k]...)
	}
	for k, v := range p.more {
		h[k] = append(slices.Clone(v), h[k]...)
	}
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countReader counts a request body as the transport reads it.
type countReader struct {
	r interface {
		Read([]byte) (int, error)
		Close() error
	}
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countReader) Close() error { return c.r.Close() }

// bufPool holds the buffers of the ReverseProxy's copies and of the masked
// bodies: 32 KiB (bufSize), or bigBufSize for large bodies (bigPool). A
// nil pool allocates.
type bufPool struct {
	c    chan []byte
	size int
}

const (
	bufSize = 32 << 10
	// bigBufSize is the buffer of a body declared at least bigBody long:
	// each write to an HTTP/2 client waits for the connection's writer
	// to send it (16 KiB frames), so larger writes mean fewer of those
	// round trips; over HTTP/1.1, fewer reads from the upstream. A 200 MiB
	// download took 8-13 % less CPU with 256 KiB than with 32 KiB.
	bigBufSize   = 256 << 10
	bigBody      = 1 << 20
	maxBigBodies = 16 // up to 3 buffers each: 12 MiB
)

// newBufPool keeps up to n idle buffers of size bytes. A channel rather
// than a sync.Pool: putting a slice into a sync.Pool allocates its header
// every time, and a GC empties it, so buffers were allocated again after
// each.
func newBufPool(n, size int) bufPool { return bufPool{c: make(chan []byte, n), size: size} }

func (b *bufPool) Get() []byte {
	if b == nil {
		return make([]byte, bufSize)
	}
	select {
	case s := <-b.c:
		return s
	default:
	}
	return make([]byte, b.size)
}

// Put takes back a buffer at its full capacity, whatever its length; a
// full pool drops it.
func (b *bufPool) Put(s []byte) {
	if b == nil || cap(s) < b.size {
		return
	}
	select {
	case b.c <- s[:cap(s)]:
	default:
	}
}
