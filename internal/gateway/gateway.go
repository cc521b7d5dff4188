// Package gateway owns mayfly's credential-injecting reverse proxy,
// ANY /gw/{upstream}/{path…} (SPEC section 5), and its checks.
//
// For each request, in this order and all before anything reaches the
// upstream:
//
//  1. the job token, from Authorization (Bearer, token, DPoP, or Basic with
//     the token as user name or password) or Proxy-Authorization, is known,
//     live and unexpired (Leases.Lookup) — else 401 invalid_token with
//     WWW-Authenticate (DPoP scheme for key-bound tokens);
//  2. the path after /gw/{upstream} passes policy.CleanPath, and the
//     Connection header lists no header but hop-by-hop ones (the proxy
//     drops what it lists, after the checks below would have read it) —
//     else 400;
//  3. policy.Policy.Authorize: the source address (clientip) is allowed —
//     equal to the lease's when the lease or one of its grants binds the
//     source, and within the source_cidrs of a who entry of the grant that
//     the lease's identity still matches — else 403;
//  4. one of the lease's grants names this upstream and allows the method
//     on the decoded path, and the same grant (whose credential the
//     request is sent with) every method the request names for a
//     framework to run instead (override.go): in a method-override header
//     under any spelling (case, "_" or "-"), a `_method`-like query
//     parameter, or a form, JSON or multipart body (read up to
//     MaxInspectedBody, else 413; forwarded as read) — else 403
//     insufficient_scope; an override that is not a method, or a body that
//     cannot be parsed, is 400, a charset or content coding the gateway
//     cannot read 415. An upstream with method_override: ignore skips this.
//     Likewise a WebDAV Destination (destination.go: every method the
//     request names, on it) and the other resources a request names
//     outside its path, copy sources and blob mounts (references.go:
//     reading them) — else 403, 400 when unreadable;
//  5. when the token is key-bound, a DPoP proof for this method and public
//     URL, carrying the token's hash and signed by the bound key — else 401
//     invalid_dpop_proof;
//  6. the lease's use limit — else 401 invalid_token.
//
// Once its decision is recorded (Audit), the token is looked at again, from
// memory: revoked or expired meanwhile, the request is refused (401
// invalid_token, the entry's outcome saying so) and never forwarded; so is
// one that a policy applied meanwhile no longer allows (403
// insufficient_scope, decided again as in 3 and 4). A
// forwarded request still running when its token is revoked or expires, or
// when the policy in force no longer allows it (a grant narrowed: a method
// or path taken out, its who entries, networks or upstream changed) — a
// response or request body still streaming, an upgraded connection — is
// cut off (watch, every 250 ms; the decision is made again, as in 3 and
// 4, when the policy has changed).
//
// The request then goes to the upstream with the path the policy was
// matched against (policy.EscapePath of policy.CleanPath: the same path, never the raw
// one), the query string as sent, every header that carried the token
// (Authorization, Proxy-Authorization, DPoP, and any other holding it)
// removed, mayfly's own cookies (the console's session and login, which a
// browser sends: same origin) removed, and the upstream credential set. Bodies stream both ways (a
// response of unknown length or an event stream is flushed at every write,
// one of known length at least every 100 ms);
// HTTP/1.1 Upgrade to WebSocket is allowed when the rule allows the method;
// an upgrade to any other protocol (h2c) is refused (400).
//
// Every answer comes on the console's origin, so it carries
// Content-Security-Policy: sandbox (beside the upstream's own) and
// X-Frame-Options: DENY; an upstream's Set-Cookie that names one of
// mayfly's cookies is dropped, its other cookies are made host-only and
// scoped to its route (scopeCookies), and any header a browser keeps as
// policy for the whole origin is dropped (Clear-Site-Data, NEL, Report-To,
// Alt-Svc, Strict-Transport-Security: originPolicies). So are the headers
// a proxy in front of mayfly would act on (X-Accel-*, X-Sendfile:
// dropFrontProxyDirectives). A Location, Content-Location, Refresh or Link
// URL on the upstream's origin, or relative to it, is mapped onto the
// gateway's URL of the route; one on its host that the route cannot reach
// is dropped, one of another origin passes (urls.go). The upstream's
// WWW-Authenticate comes back as X-Upstream-WWW-Authenticate: on a gateway
// answer, a challenge is only ever mayfly's (renameChallenges).
//
// Responses never carry the credential or the job token: response headers
// (names too, in any case), bodies, trailers and 1xx headers pass through
// internal/mask, the job masker, with every form it knows (raw, base64 at
// every alignment, hex, percent- and JSON-escaping, \u escapes, UTF-16;
// memory bounded by the read size plus the longest form). A masked body
// keeps a declared Content-Length: each masked run becomes "***" and the
// body is padded with spaces at its end. The gateway asks upstreams for
// gzip and decodes it itself after reading every Content-Encoding value
// (encoding.go), cutting a body that decodes to more than MaxGzipRatio
// times its size (a decompression bomb; the outcome says so); a response
// whose codings it cannot fully decode (stacked,
// br, deflate, zstd, unknown) is refused (502) and never forwarded, the
// audit entry saying why; so is a partial one (206, Content-Range) from an
// upstream that was sent no range (ranges are stripped unless it says
// ranges: forward). On an upgraded (WebSocket) connection the
// upstream's frames are parsed and their payloads masked in place, '*' for
// each byte so that frame lengths hold (wsMasker); a frame it cannot
// inspect (compressed, masked, malformed) ends the connection, and the
// request carries no Sec-WebSocket-Extensions so that none is compressed.
// Frames from the client pass unchanged.
//
// # Audit
//
// Fail closed and crash-safe: before the upstream sees a byte, the gateway
// records its decision (lease, identity, grant, allowing rule, upstream,
// method, decoded path without the query, source address, token hint,
// secret name and version, policy hash) with Auditor.Begin and waits until
// a kill of the server can no longer lose it: with the log's journal
// (embedded SQLite) one copy into the journal's mapping; without it (PostgreSQL) an
// entry committed to the server; where the log is configured so
// (auditlog.Options.DurableRequests), until it is on disk. The log decides
// which: the gateway only adds and waits. If that fails or takes longer than
// Config.AuditTimeout, or the log reports itself unhealthy, the request is
// answered 503 and never forwarded (a decision recorded after its wait gave
// up gets that outcome: lateDecision). When the response is done,
// Auditor.Finish records the outcome (status, bytes in and out, duration),
// not waited for, and after the client has the whole answer where it can
// tell so (HTTP/1 with a declared length; still before the handler
// returns, so a graceful shutdown waits for it): the request's one
// gateway.request entry, decision and outcome together (the journal on
// SQLite, the sequencer on PostgreSQL make it); where the decision got an
// entry of its own (durable requests, a request still running at a stop,
// on PostgreSQL one longer than the sequencer holds a decision) a second,
// gateway.response entry pointing at the decision's (detail.request_index).
// A kill -9 at any moment therefore leaves no forwarded request without an
// entry; at worst its decision with no outcome. A refused request gets one
// gateway.request entry carrying its status, the failed check and the
// reason, also awaited (503 when it cannot be recorded).
//
// It never reads the store itself: it asks Leases, Policies, Secrets and
// Auditor, interfaces that lease.Manager, the server's policy holder, the
// secret vault and auditlog.Log satisfy.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/ratelimit"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Audit entry types.
const (
	TypeRequest  = audit.TypeGateway // "gateway.request": the decision (and, for a refusal, its status)
	TypeResponse = "gateway.response"
)

// Checks named in audit entries (Event.Check) and metrics.
const (
	CheckRoute  = "route"
	CheckURL    = "url"
	CheckToken  = "token"
	CheckPath   = policy.CheckPath
	CheckSource = policy.CheckSource
	CheckScope  = policy.CheckScope
	CheckDPoP   = "dpop"
	CheckUses   = "uses"
	CheckPolicy = "policy"
	CheckSecret = "secret"
	CheckAudit  = "audit"
	// CheckRateLimited counts refusals answered 429 and not recorded:
	// over RefusalRate before a live lease was found.
	CheckRateLimited = "rate_limited"
)

// Defaults of the refusal limit: as generous as the exchange's per
// address (a fleet behind one NAT; git asks once without credentials
// before it sends them).
const (
	DefaultRefusalRate  = 100
	DefaultRefusalBurst = 1000
	refusalTable        = 100_000 // addresses tracked
)

// Leases looks up live job tokens (*lease.Manager). Ended says whether a
// lease looked up earlier has since been revoked or expired, from memory.
type Leases interface {
	Lookup(ctx context.Context, tok string) (*lease.Live, error)
	Use(ctx context.Context, l *lease.Live) error
	Ended(l *lease.Live) error
}

// Policies gives the policy in force (hot-reloaded). Current may return
// nil while none is loaded: every request is then refused (503).
type Policies interface {
	Current() *policy.Policy
}

// Secrets reveals a stored secret's value and version.
type Secrets interface {
	Reveal(ctx context.Context, name string) ([]byte, int, error)
}

// previousRevealer is optionally implemented by Secrets (*secret.Vault):
// the value a rotation replaced, while its grace period keeps it.
type previousRevealer interface {
	RevealPrevious(ctx context.Context, name string) ([]byte, int, error)
}

// SharedCredentials gives the credential a grant on a minting upstream
// shares (SPEC section 9: a GitHub App installation token, deliver:
// gateway), cached and refreshed by its owner; id names it (it changes
// when the credential does).
type SharedCredentials interface {
	SharedCredential(ctx context.Context, up *policy.Upstream, g *policy.Grant) (value, id string, err error)
}

// Auditor records entries (*auditlog.Log), with the durability the log is
// configured to give requests (auditlog.Options.Requests): Add records a
// refusal, Begin a forwarded request's decision, both answered through
// their Future, and Finish its outcome without waiting (one entry per
// request where the log keeps a journal, else two; see
// auditlog.Log.Begin). While the log is unhealthy, Add and Begin refuse at
// once.
type Auditor interface {
	Add(ctx context.Context, ev audit.Event) auditlog.Future
	Begin(ctx context.Context, ev audit.Event) *auditlog.Intent
	Finish(in *auditlog.Intent, whole audit.Event, outcomeType string)
}

// Config wires a Gateway. Leases, Policies, Secrets and Auditor are
// required.
type Config struct {
	Leases   Leases
	Policies Policies
	Secrets  Secrets
	// Minted, when set, serves upstreams whose credential is minted
	// (github_app); without it their requests are refused (503).
	Minted  SharedCredentials
	Auditor Auditor
	// DPoP verifies proofs for key-bound tokens (nil: a verifier with
	// default options).
	DPoP *dpop.Verifier
	// ClientIP finds the caller's address (nil: RemoteAddr only).
	ClientIP   *clientip.Resolver
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
	Logger     *slog.Logger
	// PublicURL returns this server's scheme and host as the client must
	// name them in a DPoP proof's htu ("https://mayfly.example:8443"),
	// from configuration, never from what the client sent. Default:
	// (*dpop.Origins).Of with no names, the connection's own address.
	PublicURL func(r *http.Request) string
	// Prefix is where the handler is mounted, with both slashes (default
	// "/gw/"). Mount it without stripping the prefix and without a router
	// that cleans paths: the gateway must see the path as sent.
	Prefix string

	DialTimeout           time.Duration // default 10s
	TLSHandshakeTimeout   time.Duration // default 10s
	ResponseHeaderTimeout time.Duration // default 60s; an upstream's timeout overrides it
	IdleConnTimeout       time.Duration // default 90s
	MaxIdleConnsPerHost   int           // default 256
	// AuditTimeout bounds the wait for a written audit entry before the
	// request is answered 503 (default 5s).
	AuditTimeout time.Duration
	// WriteStall bounds how long one write of an answer to the client may
	// take (default 60s; ~550 bytes a second at the proxy's 32 KiB
	// writes): a client that stopped reading held its handler, and the
	// upstream's connection, for as long as it liked. Negative: the
	// gateway sets no write deadline (the server bounds whole answers).
	WriteStall time.Duration
	// MaxInspectedBody bounds the form, JSON or multipart request body the
	// gateway reads to find a method override in it (default 1 MiB); a
	// larger one is refused (413), never forwarded unchecked.
	MaxInspectedBody int64
	// MaxGzipRatio bounds a gzip answer the gateway decodes to mask
	// (encoding.go): past its first MiB decoded (gzipFree), one that has
	// decoded to more than MaxGzipRatio times the bytes read of it is cut
	// (default DefaultMaxGzipRatio; negative: no cap).
	MaxGzipRatio int
	// RefusalRate and RefusalBurst bound, per address (IPv6 by /64), the
	// requests refused before a live lease is found (no route, no token,
	// an unknown, expired or revoked one): each is a durable audit entry,
	// which nobody must make at will. Over them: 429, nothing recorded.
	// Defaults DefaultRefusalRate and DefaultRefusalBurst.
	RefusalRate  float64
	RefusalBurst int
	Now          func() time.Time
}

// Gateway is the reverse proxy. It is safe for concurrent use.
type Gateway struct {
	cfg     Config
	ip      *clientip.Resolver
	dpop    *dpop.Verifier
	log     *slog.Logger
	m       *metrics
	bufPool bufPool
	bigPool bufPool // buffers of large bodies
	// bigBodies counts the bodies using bigPool's buffers now.
	bigBodies atomic.Int64
	// gzipPool holds gzip encoders (~300 KiB each) for responses encoded
	// again after masking.
	gzipPool sync.Pool
	allow    [32]map[string]any // allowDetail's shared maps, by rule
	refusals *ratelimit.Limiter // per address, before a live lease

	mu         sync.Mutex
	transports map[string]*upstreamTransport // by upstream name
	creds      map[credKey]*credential
	minted     map[string]credKey // upstream and grant → the key of its shared credential in creds

	rmu           sync.Mutex
	redactors     map[redactorKey]*redactor
	redactorBytes int // the Size of their Matchers, together
}

// New checks cfg and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Leases == nil || cfg.Policies == nil || cfg.Secrets == nil || cfg.Auditor == nil {
		return nil, errors.New("gateway: Leases, Policies, Secrets and Auditor are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/gw/"
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("gateway: prefix %q must start and end with /", cfg.Prefix)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, 10*time.Second)
	def(&cfg.TLSHandshakeTimeout, 10*time.Second)
	def(&cfg.ResponseHeaderTimeout, 60*time.Second)
	def(&cfg.IdleConnTimeout, 90*time.Second)
	def(&cfg.AuditTimeout, 5*time.Second)
	if cfg.WriteStall == 0 {
		cfg.WriteStall = 60 * time.Second
	}
	if cfg.MaxInspectedBody <= 0 {
		cfg.MaxInspectedBody = 1 << 20
	}
	if cfg.MaxGzipRatio == 0 {
		cfg.MaxGzipRatio = DefaultMaxGzipRatio
	}
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 256
	}
	if cfg.RefusalRate <= 0 {
		cfg.RefusalRate = DefaultRefusalRate
	}
	if cfg.RefusalBurst <= 0 {
		cfg.RefusalBurst = DefaultRefusalBurst
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PublicURL == nil {
		cfg.PublicURL = (&dpop.Origins{}).Of
	}
	g := &Gateway{cfg: cfg, ip: cfg.ClientIP, dpop: cfg.DPoP, log: cfg.Logger,
		transports: map[string]*upstreamTransport{}, creds: map[credKey]*credential{}, minted: map[string]credKey{}, bufPool: newBufPool(256, bufSize), bigPool: newBufPool(8, bigBufSize),
		redactors: map[redactorKey]*redactor{}}
	if g.ip == nil {
		g.ip = clientip.New(nil)
	}
	if g.dpop == nil {
		g.dpop = dpop.NewVerifier(dpop.Options{})
	}
	g.refusals = ratelimit.New(cfg.RefusalRate, cfg.RefusalBurst, refusalTable)
	for i := range g.allow {
		g.allow[i] = map[string]any{"decision": "allow", "rule": i}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	g.m = m
	return g, nil
}

// Close drops idle upstream connections.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range g.transports {
		t.tr.CloseIdleConnections()
	}
}

// request is one request's state.
type request struct {
	start   time.Time
	rc      http.ResponseController // the answer's, for its write deadline
	ev      audit.Event
	tok     string
	scheme  string
	live    *lease.Live
	leased  bool   // a live lease was found: refusals are no longer rate limited
	upLabel string // metrics label: a known upstream's name or "-"
	dest    string // the clean upstream path of a Destination header
	audit   auditCtx

	// The client's address: what refusals are rate limited by
	// (clientip.RateKey, made only for a refusal) and, with the policy
	// and the methods overrides named once allowed, the decision's
	// inputs beside live and ev.Upstream.
	addr      netip.Addr
	pol       *policy.Policy
	overrides []string
	also      []policy.Access // what the resources it names need (references.go)
}

// holderOf is the holder a lease's requests are decided for.
func holderOf(l *lease.Live) *policy.Holder {
	return &policy.Holder{Issuer: l.Issuer, Claims: l.Claims, Grants: l.Grants, Source: l.Source, BindSource: l.BindSource}
}

// ServeHTTP checks, records and forwards one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// An answer's writes are bounded (WriteStall; renewed at each write
	// of a forwarded answer, respWriter): the server sets none, since
	// downloads stream for as long as they take.
	rq := &request{start: g.cfg.Now(), upLabel: "-", rc: *http.NewResponseController(w)}
	if g.cfg.WriteStall > 0 {
		rq.rc.SetWriteDeadline(time.Now().Add(g.cfg.WriteStall))
	}
	rq.ev = audit.Event{Type: TypeRequest, Method: truncate(r.Method, 32)}
	addr := g.ip.Addr(r)
	if addr.IsValid() {
		rq.ev.Source = addr.String()
	}
	rq.addr = addr

	full := requestPath(r)
	rest, ok := strings.CutPrefix(full, g.cfg.Prefix)
	upName, sub := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		upName, sub = rest[:i], rest[i:]
	}
	// 0. A mayfly token in the URL would reach the upstream's logs (and
	// ours): refuse it before anything else, and keep the path out of the
	// audit entry.
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	if urlHasToken(target) {
		rq.ev.Path = "" // it holds the token
		g.refuse(w, r, rq, http.StatusBadRequest, "invalid_request",
			"the URL carries a mayfly token (or is percent-encoded too often to tell): send tokens only in the Authorization header, never in a URL (nothing was forwarded)", CheckURL)
		return
	}

	rq.ev.Path = truncate(sub, 512)
	if !ok || !validName(upName) {
		rq.ev.Path = truncate(full, 512)
		g.refuse(w, r, rq, http.StatusNotFound, "not_found", "no such gateway route: use /gw/{upstream}/{path}", CheckRoute)
		return
	}
	rq.ev.Upstream = upName

	// 1. token
	tok, scheme, err := extractToken(func(k string) []string { return r.Header[k] })
	if err != nil {
		g.refuse(w, r, rq, http.StatusUnauthorized, "invalid_token", err.Error(), CheckToken)
		return
	}
	rq.tok, rq.scheme = tok, scheme
	rq.ev.Hint = token.Hint(tok)
	l, err := g.cfg.Leases.Lookup(r.Context(), tok)
	if l != nil {
		rq.live = l
		rq.ev.Lease, rq.ev.Issuer, rq.ev.Subject, rq.ev.Job = l.ID, l.Issuer, l.Subject, l.Job
		rq.ev.Repository = l.Claims["repository"]
		rq.ev.Grant = strings.Join(l.Grants, " ")
	}
	if errors.Is(err, failclosed.ErrUnavailable) {
		g.log.Warn("gateway: token lookup unavailable", "err", err)
		g.refuse(w, r, rq, http.StatusServiceUnavailable, "temporarily_unavailable", "the token could not be looked up", CheckToken)
		return
	}
	if err != nil || l == nil {
		desc := "unknown token"
		if err != nil {
			desc = err.Error()
		}
		g.refuse(w, r, rq, http.StatusUnauthorized, "invalid_token", desc, CheckToken)
		return
	}
	rq.leased = true

	pol := g.cfg.Policies.Current()
	if pol == nil {
		g.refuse(w, r, rq, http.StatusServiceUnavailable, "temporarily_unavailable", "no policy loaded", CheckPolicy)
		return
	}
	rq.ev.PolicyVersion = shortHash(pol.Hash)
	if _, known := pol.Upstreams[upName]; known {
		rq.upLabel = upName
	}

	// 2. path
	clean, err := policy.CleanPath(sub)
	if err != nil {
		rq.ev.Detail = map[string]any{"reason": policy.PathRefused.Code()}
		g.refuse(w, r, rq, http.StatusBadRequest, "invalid_request", err.Error(), CheckPath)
		return
	}
	rq.ev.Path = truncate(clean, 2048)
	if connectionListsEndToEnd(r.Header) {
		// The checks below must read the headers the upstream gets.
		g.refuse(w, r, rq, http.StatusBadRequest, "invalid_request",
			"the Connection header lists a header that is not hop-by-hop, which the gateway would check but not forward: list only close, keep-alive, upgrade or te there (nothing was forwarded)", CheckScope)
		return
	}
	if k := tokenHeader(r.Header, tok); k != "" {
		// Likewise: the proxy would drop that header after the checks.
		g.refuse(w, r, rq, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("the %s header carries the mayfly token: send it only in Authorization or Proxy-Authorization (nothing was forwarded)", truncate(k, 64)), CheckToken)
		return
	}

	// 3. source address, 4. scope
	holder := holderOf(l)
	dec := pol.Authorize(holder, addr, upName, r.Method, clean)
	why, desc := dec.Reason, dec.Reason.String()
	var methods []string // the methods overrides name
	if up := pol.Upstreams[upName]; why == policy.Allowed && up != nil && !up.IgnoreMethodOverride {
		// Frameworks run the method a request names in an override
		// header, query parameter or body (override.go): the policy must
		// allow each of those too.
		methods, err = g.overrides(r)
		if err != nil {
			status, reason := asOverrideError(err)
			g.refuse(w, r, rq, status, "invalid_request", reason, CheckScope)
			return
		}
	}
	dest := ""
	if why == policy.Allowed {
		// WebDAV's second resource (destination.go): the policy must
		// allow its path too, for every method the request names.
		var de *destinationError
		dest, de = destinationPath(r.Header, r.Host, g.cfg.Prefix+upName)
		if de != nil {
			g.refuseResource(w, r, rq, de)
			return
		}
		rq.dest = dest
	}
	var refs []reference
	if up := pol.Upstreams[upName]; why == policy.Allowed && up != nil {
		// Other resources the request names, which the upstream reads
		// (references.go): the policy must allow reading them too.
		var de *destinationError
		refs, de = references(r, clean, up.URL)
		if de != nil {
			g.refuseResource(w, r, rq, de)
			return
		}
		if len(refs) > 0 {
			rq.also = accesses(refs, append([]string{r.Method}, methods...))
		}
	}
	if why == policy.Allowed && (len(methods) > 0 || dest != "" || len(refs) > 0) {
		// The request goes upstream with one grant's credential: that
		// grant must allow all of it, not each part some grant.
		all, paths := append([]string{r.Method}, methods...), []string{clean}
		if dest != "" {
			paths = append(paths, dest)
		}
		dec = pol.AuthorizeAll(holder, addr, upName, all, paths, rq.also...)
		if dec.Reason != policy.Allowed {
			why, desc = dec.Reason, dec.Reason.String()+notAllowed(pol, holder, addr, upName, all, paths, refs)
		}
	}
	if why != policy.Allowed {
		status, code := http.StatusForbidden, "insufficient_scope"
		if why.Check() == CheckSource {
			code = "access_denied"
		}
		rq.ev.Detail = map[string]any{"reason": why.Code()}
		g.refuse(w, r, rq, status, code, desc, why.Check())
		return
	}
	rq.ev.Grant = dec.Grant.Name
	// What was decided, for the watcher to decide again under a newer
	// policy while the request runs (forwarding.stillAllowed).
	rq.pol, rq.overrides = pol, methods
	up := pol.Upstreams[upName]
	if up == nil {
		g.refuse(w, r, rq, http.StatusForbidden, "insufficient_scope", "upstream not in policy", CheckScope)
		return
	}
	if badUpgrade(r.Header) {
		// Only WebSocket: another protocol (h2c) would turn the connection
		// into a tunnel for requests the gateway never checks.
		g.refuse(w, r, rq, http.StatusBadRequest, "invalid_request", "only a WebSocket upgrade is allowed", CheckScope)
		return
	}

	// 5. DPoP
	if l.JKT != "" {
		proofs := r.Header.Values("DPoP")
		if len(proofs) != 1 {
			g.refuse(w, r, rq, http.StatusUnauthorized, "invalid_dpop_proof", "exactly one DPoP header is required for this token", CheckDPoP)
			return
		}
		htu := g.cfg.PublicURL(r) + full
		if _, err := g.dpop.VerifyContext(r.Context(), proofs[0], r.Method, htu, tok, l.JKT); err != nil {
			if errors.Is(err, failclosed.ErrUnavailable) {
				g.log.Warn("gateway: DPoP replay check unavailable", "err", err)
				g.refuse(w, r, rq, http.StatusServiceUnavailable, "temporarily_unavailable", "the DPoP replay check is unavailable", CheckDPoP)
				return
			}
			g.refuse(w, r, rq, http.StatusUnauthorized, "invalid_dpop_proof", "DPoP proof refused: "+dpop.CheckOf(err), CheckDPoP)
			return
		}
	}

	// 6. use limit
	if err := g.cfg.Leases.Use(r.Context(), l); err != nil {
		if !errors.Is(err, lease.ErrUsedUp) {
			g.log.Warn("gateway: use not counted", "lease", l.ID, "err", err)
			g.refuse(w, r, rq, http.StatusServiceUnavailable, "temporarily_unavailable", "the use could not be counted", CheckUses)
			return
		}
		g.refuse(w, r, rq, http.StatusUnauthorized, "invalid_token", err.Error(), CheckUses)
		return
	}

	cred, err := g.credential(r.Context(), up, dec.Grant)
	if err != nil {
		g.log.Warn("gateway: upstream credential unavailable", "upstream", up.Name, "secret", up.Credential.Secret, "err", err)
		g.refuse(w, r, rq, http.StatusServiceUnavailable, "temporarily_unavailable", "the upstream credential is unavailable", CheckSecret)
		return
	}
	rq.ev.Secret, rq.ev.SecretVersion = up.Credential.Secret, cred.version
	rq.ev.Detail = g.allowDetail(dec.Rule, methods, dest, refs)
	red, err := g.redactor(cred, rq.tok)
	if err != nil {
		g.log.Warn("gateway: response masker", "upstream", up.Name, "err", err)
		g.refuse(w, r, rq, http.StatusServiceUnavailable, "temporarily_unavailable", "the upstream credential is unavailable", CheckSecret)
		return
	}

	tr, err := g.transport(up)
	if err != nil {
		g.log.Warn("gateway: upstream transport", "upstream", up.Name, "err", err)
		g.refuse(w, r, rq, http.StatusBadGateway, "bad_gateway", "the upstream is misconfigured", "upstream")
		return
	}

	// The decision is recorded (safe from a kill) before the upstream sees a byte.
	rq.audit.init(r.Context(), g.cfg.AuditTimeout)
	in, err := g.begin(&rq.audit, rq.ev)
	if err != nil {
		g.log.Error("gateway: audit entry not written; request refused", "err", err)
		g.lateDecision(in, rq)
		g.m.refused.WithLabelValues(CheckAudit).Inc()
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the audit log is unavailable", "")
		g.m.observe(rq.upLabel, http.StatusServiceUnavailable, g.cfg.Now().Sub(rq.start), 0, 0)
		return
	}
	// The checks and the audit wait take time (store round trips, the
	// entry's durability): a token revoked meanwhile (a leak report racing
	// the request) or expired must not reach the upstream. From memory, no
	// store read. The decision is durable already: its outcome says refused.
	if err := g.cfg.Leases.Ended(l); err != nil {
		rq.ev.Status, rq.ev.Check, rq.ev.Reason = http.StatusUnauthorized, CheckToken, err.Error()
		rq.ev.DurationMS = g.cfg.Now().Sub(rq.start).Milliseconds()
		g.cfg.Auditor.Finish(in, rq.ev, TypeResponse)
		g.answer(w, r, rq, http.StatusUnauthorized, "invalid_token", err.Error(), CheckToken)
		return
	}
	// Likewise a policy applied meanwhile that no longer allows the
	// request: its apply has answered, and the watcher would look only
	// once the upstream had acted on it.
	if err := g.stillAllowed(rq, r.Method, clean); err != nil {
		rq.ev.Status, rq.ev.Check, rq.ev.Reason = http.StatusForbidden, CheckPolicy, err.Error()
		rq.ev.DurationMS = g.cfg.Now().Sub(rq.start).Milliseconds()
		g.cfg.Auditor.Finish(in, rq.ev, TypeResponse)
		g.answer(w, r, rq, http.StatusForbidden, "insufficient_scope", err.Error(), CheckPolicy)
		return
	}
	g.forward(w, r, rq, up, tr, cred, red, clean, in)
}

// notAllowed says, for a refusal's words, which part of a request beyond
// its line (an override's method, the Destination, a resource it names)
// no grant of the token allows, or that each part is allowed by some
// grant but none allows all.
func notAllowed(pol *policy.Policy, h *policy.Holder, addr netip.Addr, upName string, methods, paths []string, refs []reference) string {
	for _, m := range methods[1:] {
		if pol.Authorize(h, addr, upName, m, paths[0]).Reason != policy.Allowed {
			return " (method override " + truncate(m, 32) + ")"
		}
	}
	if len(paths) > 1 {
		for _, m := range methods {
			if pol.Authorize(h, addr, upName, m, paths[1]).Reason != policy.Allowed {
				return " (destination " + truncate(paths[1], 256) + ")"
			}
		}
	}
	for _, ref := range refs {
		if pol.AuthorizeAll(h, addr, upName, methods[:1], paths[:1], accesses([]reference{ref}, methods)...).Reason != policy.Allowed {
			verb := "reading"
			switch {
			case ref.remove:
				verb = "reading and removing"
			case ref.write:
				verb = truncate(strings.Join(methods, " "), 64) + " on"
			}
			return " (" + verb + " " + ref.by + " " + truncate(ref.path, 256) + ")"
		}
	}
	return " (no one grant allows the method, its overrides and its destination together)"
}

// allowDetail is the detail of an allowed request's entry. The maps of the
// first rules are built once and shared: nothing changes an event's Detail
// once made (the audit log only reads it). A request that names more than
// its line, the methods of its overrides or a Destination, has them in
// its detail too: the upstream runs them, and the entry's method and path
// alone would hide it (a POST that ran a DELETE, a MOVE onto another path).
func (g *Gateway) allowDetail(rule int, overrides []string, dest string, refs []reference) map[string]any {
	if len(overrides) == 0 && dest == "" && len(refs) == 0 {
		if rule >= 0 && rule < len(g.allow) {
			return g.allow[rule]
		}
		return map[string]any{"decision": "allow", "rule": rule}
	}
	d := map[string]any{"decision": "allow", "rule": rule}
	if len(overrides) > 0 {
		// Each at most 32 bytes, but a header may name thousands: the
		// entry must stay small enough to be recorded.
		var uniq []string
		for _, m := range overrides {
			if !slices.Contains(uniq, m) {
				uniq = append(uniq, m)
			}
		}
		d["overrides"] = truncate(strings.Join(uniq, " "), 512)
	}
	if dest != "" {
		d["destination"] = truncate(dest, 2048)
	}
	if len(refs) > 0 {
		d["references"] = truncate(referencesText(refs), 2048)
	}
	return d
}

// refuseResource refuses a request for a second resource it names (a
// WebDAV Destination, a copy source): 403 when the grant does not allow
// it, else the request is malformed.
func (g *Gateway) refuseResource(w http.ResponseWriter, r *http.Request, rq *request, de *destinationError) {
	code := "invalid_request"
	if de.status == http.StatusForbidden {
		code = "insufficient_scope"
	}
	g.refuse(w, r, rq, de.status, code, de.reason, CheckScope)
}

// refuse records a refusal and answers it. Before a live lease is found
// the caller is nobody known, so each address may make only so many
// recorded refusals (RefusalRate); past that it gets 429, unrecorded.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, rq *request, status int, code, desc, check string) {
	if !rq.leased && !g.refusals.Allow(clientip.RateKey(rq.addr)) {
		w.Header().Set("Retry-After", "1")
		status, code, desc, check = http.StatusTooManyRequests, "rate_limited", "too many refused requests from this address; retry later", CheckRateLimited
	} else {
		rq.ev.Status, rq.ev.Check, rq.ev.Reason = status, check, desc
		if _, err := g.record(r.Context(), rq.ev); err != nil {
			g.log.Error("gateway: audit entry not written", "err", err)
			status, code, desc = http.StatusServiceUnavailable, "temporarily_unavailable", "the audit log is unavailable"
			check = CheckAudit
		}
	}
	g.answer(w, r, rq, status, code, desc, check)
}

// answer counts and writes a refusal already recorded.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, rq *request, status int, code, desc, check string) {
	g.m.refused.WithLabelValues(check).Inc()
	unread := r.ProtoMajor == 1 && r.ContentLength != 0
	if unread {
		// Answer now and close, rather than let the server read (and wait
		// for) a body nobody will use before it answers.
		w.Header().Set("Connection", "close")
	}
	www := ""
	switch {
	case status == http.StatusUnauthorized:
		sch := "Bearer"
		if rq.scheme == "dpop" || rq.live != nil && rq.live.JKT != "" || code == "invalid_dpop_proof" {
			sch = "DPoP"
		}
		www = fmt.Sprintf(`%s error=%q, error_description=%q`, sch, code, desc)
		if sch == "DPoP" {
			www += `, algs="ES256 RS256 PS256 EdDSA"`
		}
	case code == "insufficient_scope":
		www = `Bearer error="insufficient_scope"`
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(www, "DPoP") {
		// git (libcurl) sends the user:token of a clone URL only when
		// offered Basic, so offer it beside Bearer.
		w.Header().Add("WWW-Authenticate", `Basic realm="mayfly gateway", charset="UTF-8"`)
	}
	writeError(w, status, code, desc, www)
	if unread {
		// net/http still reads up to 256 KiB of an unread body after the
		// answer, even when closing: a read deadline in the past ends
		// that at once, and with it the connection.
		http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
	}
	g.m.observe(rq.upLabel, status, g.cfg.Now().Sub(rq.start), 0, 0)
}

// record adds ev (a refusal) and waits until it is as safe as the log
// promises a request's entry, within AuditTimeout (queueing included)
// whether or not the client stays.
func (g *Gateway) record(ctx context.Context, ev audit.Event) (int64, error) {
	var ac auditCtx
	ac.init(ctx, g.cfg.AuditTimeout)
	defer ac.stop()
	return g.cfg.Auditor.Add(&ac, ev).Wait(&ac)
}

// begin records a forwarded request's decision and waits as record does.
// On an error the Intent is returned too: a decision the wait gave up on
// may still be recorded (lateDecision).
func (g *Gateway) begin(ac *auditCtx, ev audit.Event) (*auditlog.Intent, error) {
	defer ac.stop()
	in := g.cfg.Auditor.Begin(ac, ev)
	if _, err := in.Wait(ac); err != nil {
		return in, err
	}
	return in, nil
}

// lateEntryWait bounds how long lateDecision waits for a decision that was
// not recorded within AuditTimeout.
const lateEntryWait = time.Minute

// lateDecision gives a decision whose wait gave up (AuditTimeout: a slow
// commit) its outcome, 503 and never forwarded, should the decision be
// recorded after all: once queued it is. Without one it would read as a
// forwarded request whose outcome was lost (a crash), though the upstream
// never saw it. A decision the log refused at once has nothing to finish.
func (g *Gateway) lateDecision(in *auditlog.Intent, rq *request) {
	if in == nil {
		return
	}
	ev := rq.ev
	ev.Status, ev.Check, ev.Reason = http.StatusServiceUnavailable, CheckAudit, "the audit log did not answer in time; not forwarded"
	ev.DurationMS = g.cfg.Now().Sub(rq.start).Milliseconds()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), lateEntryWait)
		defer cancel()
		if _, err := in.Wait(ctx); err == nil {
			g.cfg.Auditor.Finish(in, ev, TypeResponse)
		}
	}()
}

// auditCtx is the context of an audit wait: the request's values without
// its cancellation (the entry must be waited for whether or not the client
// stays), ending at a deadline. Its timer is armed only when something
// waits on it (Done or Err): a journaled entry is answered at once and
// never does, so most requests set no timer at all.
type auditCtx struct {
	context.Context // context.WithoutCancel of the request's
	deadline        time.Time
	mu              sync.Mutex
	armed           context.Context
	cancel          context.CancelFunc
	stopped         bool
}

func (c *auditCtx) init(parent context.Context, timeout time.Duration) {
	c.Context, c.deadline = context.WithoutCancel(parent), time.Now().Add(timeout)
}

func (c *auditCtx) arm() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed == nil {
		d := c.deadline
		if c.stopped {
			d = time.Time{} // a waiter after stop finds it done, and no timer is left behind
		}
		c.armed, c.cancel = context.WithDeadline(c.Context, d)
	}
	return c.armed
}

func (c *auditCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *auditCtx) Done() <-chan struct{}       { return c.arm().Done() }
func (c *auditCtx) Err() error                  { return c.arm().Err() }

// stop releases the timer, if one was armed; the context is done after it.
func (c *auditCtx) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.cancel != nil {
		c.cancel()
	}
}

// requestPath is the path as the client sent it, still escaped.
func requestPath(r *http.Request) string {
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return u
	}
	return r.URL.EscapedPath()
}

// badUpgrade reports whether a request asks to switch protocols to anything
// but WebSocket.
func badUpgrade(h http.Header) bool {
	upgrade := false
	for _, v := range h["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				upgrade = true
			}
		}
	}
	if !upgrade {
		return false
	}
	ups := h["Upgrade"]
	if len(ups) == 0 {
		return false // nothing to switch to: the proxy sends no Upgrade
	}
	return len(ups) != 1 || !strings.EqualFold(strings.TrimSpace(ups[0]), "websocket")
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

// sandboxCSP makes a gateway answer inert in a browser: it comes on the
// origin of the console and of the cookie-signed-in API, where an
// upstream's script could read the admin's CSRF token and act as them.
// Added beside any CSP of the upstream's: a browser enforces every one.
const sandboxCSP = "sandbox; frame-ancestors 'none'"

func sandbox(h http.Header) {
	h.Add("Content-Security-Policy", sandboxCSP)
	h.Set("X-Frame-Options", "DENY")
}

func writeError(w http.ResponseWriter, status int, code, desc, wwwAuth string) {
	h := w.Header()
	sandbox(h)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if wwwAuth != "" {
		// First, so the most specific challenge leads.
		h["Www-Authenticate"] = append([]string{wwwAuth}, h.Values("WWW-Authenticate")...)
	}
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, desc})
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
