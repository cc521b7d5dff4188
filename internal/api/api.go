// Package api is mayfly's HTTP surface: routing, the JSON error shape,
// admin authentication and roles, the admin network gate, rate limits,
// request metrics and body limits. It turns requests into calls on the
// authority, lease, secret and audit packages and answers per SPEC section 4.
//
// It holds no business rules: who may have a token, what a token may do and
// what is recorded are decided below it.
package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/ratelimit"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/sso"
	"github.com/mayfly-sh/mayfly/internal/version"
)

// Secrets is the secret store as the API sees it: metadata only. Writes
// go through the authority, which records them.
type Secrets interface {
	List(ctx context.Context) ([]SecretMeta, error)
	Meta(ctx context.Context, name string) (SecretMeta, error)
}

// SecretMeta describes a stored secret without its value.
type SecretMeta = apitype.SecretMeta

// Errors Secrets returns: an unknown name; a name or value it refuses.
var (
	ErrSecretNotFound = errors.New("secret not found")
	ErrInvalidSecret  = errors.New("invalid secret name or value")
	// ErrLeakReportTooLarge, wrapped by ParseLeakReport, refuses a report
	// holding more tokens than can be taken from one (413).
	ErrLeakReportTooLarge = errors.New("leak report holds too many tokens")
)

// Health reports whether a dependency can take writes.
type Health interface{ Healthy() error }

// Pinger is the store as readiness asks it.
type Pinger interface {
	// Ping checks that the store would take a write.
	Ping(context.Context) error
	// SchemaNewer says, once a newer mayfly has migrated the database,
	// why this node takes no write (nil before): readiness names it.
	SchemaNewer() error
}

// Config wires the API.
type Config struct {
	Authority *authority.Authority
	Admins    *authority.Admins
	Leases    *lease.Manager
	Audit     *auditlog.Log
	Secrets   Secrets
	Store     Pinger
	Gateway   http.Handler
	DPoP      *dpop.Verifier
	// ClientAddr resolves the caller's address (trusted proxies applied).
	ClientAddr func(*http.Request) netip.Addr
	// PublicURL returns this server's scheme://host as DPoP proofs must
	// name it (htu), from configuration (dpop.Origins); nil: the
	// connection's own address.
	PublicURL func(*http.Request) string
	// AdminCIDRs may reach the control plane (default loopback only).
	AdminCIDRs []netip.Prefix
	// AdminClientCAs, when set, requires admin callers to present a client
	// certificate from these CAs (mTLS) as well as a token.
	AdminClientCAs *x509.CertPool
	// ParseLeakReport extracts tokens from a /v1/leaks body.
	ParseLeakReport func(body []byte) (tokens []string, source, url string, err error)
	// VerifyLeakSignature, when set, checks a signed leak report (GitHub's
	// secret-scanning signature headers): signed says the report carries a
	// signature, err that it does not verify. Either way the report is
	// taken (holding a token is enough to kill it); its audit entry says
	// what the signature said.
	VerifyLeakSignature func(r *http.Request, body []byte) (signed bool, err error)
	Limits              Limits
	Registerer          prometheus.Registerer
	Gatherer            prometheus.Gatherer
	Logger              *slog.Logger
	HSTS                bool
	// SSO and Sessions, when set, sign humans in through the identity
	// provider (admin_oidc): /ui/login, the callback, /ui/logout, the
	// CLI's /v1/auth/… and session callers of every admin endpoint.
	SSO      *sso.RP
	Sessions *authority.Sessions
	// Console serves /ui/ for signed-in humans: each request reaching it
	// has passed the network gate and the session (and, when it changes
	// state, CSRF) checks, and carries the caller (sso.CallerFrom).
	Console http.Handler
}

// Limits bound inputs and request rates. The per-address exchange limits
// are high because one address often stands for a whole CI fleet behind a
// NAT, whose jobs start together (README, "Why these rate limits").
type Limits struct {
	MaxBody       int64   // form/JSON bodies (default 64 KiB)
	MaxLeakBody   int64   // /v1/leaks bodies (default 1 MiB)
	MaxPolicyBody int64   // policy YAML (default 1 MiB)
	TokenRate     float64 // exchanges per second per source address (default 100)
	TokenBurst    int     // (default 1000: a 1,000-runner fan-out at once)
	IssuerRate    float64 // admitted exchanges per second per issuer (default 500)
	IssuerBurst   int     // (default 2000)
	LeakRate      float64 // leak reports per second per source (default 5)
	LeakBurst     int     // (default 20)
	// MaxLeakTokens caps the distinct tokens of one leak report (default
	// 1000): a report with more is refused (413) and changes nothing, so
	// the work one report causes is bounded.
	MaxLeakTokens int
	// LeakConcurrency is how many leak reports are worked on at once, over
	// all sources (default 1), and LeakQueue how many more may wait for
	// their turn (default 8); beyond that a report gets 429 at once. A
	// flood of reports from many addresses thus takes at most this share
	// of the node, whatever it does to /v1/leaks. A report's body is read
	// before it waits, and one address may send LeakConcurrency+LeakQueue
	// bodies at once.
	LeakConcurrency int
	LeakQueue       int
	// LeakTokenRate is the work all leak reports together may cause per
	// second (default 2000): a report costs its distinct tokens, or one
	// per KiB of its body if that is more. Once it is spent, reports get
	// 429 before their bodies are read until it has refilled. One address
	// may spend a quarter of it.
	LeakTokenRate float64
	// AdminRate and AdminBurst bound, per source, the refused
	// control-plane requests (each audited) and, in a bucket of their own,
	// the sign-ins started (each stores a state or asks the provider).
	AdminRate       float64 // per second (default 50)
	AdminBurst      int     // (default 200)
	RateLimitTables int     // max addresses tracked per limiter (default 100000)
}

func (l *Limits) defaults() {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxBody, 64<<10)
	def(&l.MaxLeakBody, 1<<20)
	def(&l.MaxPolicyBody, 1<<20)
	deff(&l.TokenRate, 100)
	defi(&l.TokenBurst, 1000)
	deff(&l.IssuerRate, 500)
	defi(&l.IssuerBurst, 2000)
	deff(&l.LeakRate, 5)
	defi(&l.LeakBurst, 20)
	defi(&l.MaxLeakTokens, 1000)
	defi(&l.LeakConcurrency, 1)
	defi(&l.LeakQueue, 8)
	deff(&l.LeakTokenRate, 2000)
	deff(&l.AdminRate, 50)
	defi(&l.AdminBurst, 200)
	defi(&l.RateLimitTables, 100000)
}

// leakShares: one address may spend 1/leakShares of limits.leak_token_rate.
const leakShares = 4

// maxLeakPlaces bounds limits.leak_concurrency and limits.leak_queue.
const maxLeakPlaces = 1 << 16

// API is the http.Handler of a mayfly node.
type API struct {
	cfg      Config
	mux      *http.ServeMux
	metrics  *metrics
	tokenRL  *ratelimit.Limiter
	renewRL  *ratelimit.Limiter // renewals, at the exchanges' rate, counted apart
	revokeRL *ratelimit.Limiter // revocations (RFC 7009), likewise
	issuerRL *ratelimit.Limiter
	leakRL   *ratelimit.Limiter
	leakGate *gate
	// leakReads bounds the leak report bodies one address sends at once:
	// they are read before a turn at the gate is taken, so that a slow
	// body holds no place another reporter needs.
	leakReads *ratelimit.Concurrent
	// leakBudget is limits.leak_token_rate: tokens named (or KiB read)
	// per second over all leak reports. leakShare is what one address may
	// spend of it (a quarter), so that one address's flood cannot keep it
	// spent for every other reporter.
	leakBudget *budget
	leakShare  *ratelimit.Limiter
	adminRL    *ratelimit.Limiter
	signInRL   *ratelimit.Limiter // sign-ins started (admin_rate), per address
	// ready is /readyz's store ping, shared by the requests that arrive
	// while it is under way.
	ready sharedPing
}

// sharedPing runs at most one store ping at a time: callers that arrive
// while one is under way wait for its answer. /readyz is unauthenticated,
// and a ping per request let one caller hold the store's few connections
// (PostgreSQL: the pool every exchange and lease write needs) at will.
type sharedPing struct {
	mu  sync.Mutex
	cur *pingRun
}

type pingRun struct {
	done chan struct{}
	err  error
}

// ping answers ping's result, from the one under way or a new one; it
// returns early with ctx's error when ctx ends first. The ping runs under
// its own timeout, so one caller leaving does not fail the others.
func (p *sharedPing) ping(ctx context.Context, timeout time.Duration, ping func(context.Context) error) error {
	p.mu.Lock()
	run := p.cur
	if run == nil {
		run = &pingRun{done: make(chan struct{})}
		p.cur = run
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		go func() {
			defer cancel()
			run.err = ping(pctx)
			p.mu.Lock()
			p.cur = nil
			p.mu.Unlock()
			close(run.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-run.done:
		return run.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New builds the API.
func New(cfg Config) (*API, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.AdminCIDRs) == 0 {
		cfg.AdminCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if cfg.ClientAddr == nil {
		cfg.ClientAddr = remoteAddr
	}
	cfg.Limits.defaults()
	// The leak gate's places are made up front: a huge setting would take
	// all memory (or overflow) at the start rather than bound anything.
	if cfg.Limits.LeakConcurrency > maxLeakPlaces || cfg.Limits.LeakQueue > maxLeakPlaces {
		return nil, fmt.Errorf("limits: leak_concurrency and leak_queue must be at most %d", maxLeakPlaces)
	}
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	a.metrics = m
	a.tokenRL = ratelimit.New(cfg.Limits.TokenRate, cfg.Limits.TokenBurst, cfg.Limits.RateLimitTables)
	// Each renewal that extends a token is a store write and an audit
	// entry: as many a second as exchanges, in a table of their own so
	// that renewing jobs never take the fleet's exchanges.
	a.renewRL = ratelimit.New(cfg.Limits.TokenRate, cfg.Limits.TokenBurst, cfg.Limits.RateLimitTables)
	// A revocation reads its body (up to the read deadline) and may read
	// the store for its token: bounded per address as exchanges are (each
	// token revoked was exchanged once), in a table of its own.
	a.revokeRL = ratelimit.New(cfg.Limits.TokenRate, cfg.Limits.TokenBurst, cfg.Limits.RateLimitTables)
	a.issuerRL = ratelimit.New(cfg.Limits.IssuerRate, cfg.Limits.IssuerBurst, 10000)
	a.leakRL = ratelimit.New(cfg.Limits.LeakRate, cfg.Limits.LeakBurst, cfg.Limits.RateLimitTables)
	a.leakGate = newGate(cfg.Limits.LeakConcurrency, cfg.Limits.LeakQueue)
	// As many as the gate could hold from one address before its bodies
	// were read first: 9 MiB of bodies by default.
	a.leakReads = ratelimit.NewConcurrent(cfg.Limits.LeakConcurrency + cfg.Limits.LeakQueue)
	// Its capacity is a second of work, and at least one report at the cap.
	leakCap := max(int(cfg.Limits.LeakTokenRate), cfg.Limits.MaxLeakTokens)
	a.leakBudget = newBudget(cfg.Limits.LeakTokenRate, leakCap)
	// The same capacity: one report at the cap is still taken whole.
	a.leakShare = ratelimit.New(cfg.Limits.LeakTokenRate/leakShares, leakCap, cfg.Limits.RateLimitTables)
	a.adminRL = ratelimit.New(cfg.Limits.AdminRate, cfg.Limits.AdminBurst, cfg.Limits.RateLimitTables)
	a.signInRL = ratelimit.New(cfg.Limits.AdminRate, cfg.Limits.AdminBurst, cfg.Limits.RateLimitTables)
	a.routes()
	return a, nil
}

func (a *API) routes() {
	h := func(pattern string, fn http.HandlerFunc) {
		route := pattern
		if i := strings.IndexByte(route, ' '); i >= 0 {
			route = route[i+1:]
		}
		a.mux.Handle(pattern, a.metrics.wrap(route, fn))
	}
	admin := func(pattern, role string, fn func(http.ResponseWriter, *http.Request, caller)) {
		h(pattern, a.admin(role, a.cfg.Limits.MaxBody, fn))
	}
	// Policy YAML may be larger than the other bodies.
	policyAdmin := func(pattern, role string, fn func(http.ResponseWriter, *http.Request, caller)) {
		h(pattern, a.admin(role, a.cfg.Limits.MaxPolicyBody, fn))
	}
	h("GET /healthz", a.healthz)
	h("GET /readyz", a.readyz)
	if a.cfg.Gatherer != nil {
		// Metrics name upstreams and show their traffic: on this listener
		// only for auditors (the unauthenticated copy is the server's
		// separate metrics listener, loopback by default).
		metrics := promhttp.HandlerFor(a.cfg.Gatherer, promhttp.HandlerOpts{})
		admin("GET /metrics", authority.RoleAuditor, func(w http.ResponseWriter, r *http.Request, _ caller) { metrics.ServeHTTP(w, r) })
	}
	h("POST /v1/token", a.metrics.countExchange(a.exchange))
	h("POST /v1/token/renew", a.renew)
	h("POST /v1/revoke", a.revoke)
	h("POST /v1/leaks", a.leaks)

	admin("POST /v1/introspect", authority.RoleOperator, a.introspect)
	admin("GET /v1/leases", authority.RoleAuditor, a.listLeases)
	admin("POST /v1/leases/revoke", authority.RoleOperator, a.revokeLeases)
	admin("GET /v1/secrets", authority.RoleAuditor, a.listSecrets)
	admin("GET /v1/secrets/{name}", authority.RoleAuditor, a.showSecret)
	admin("PUT /v1/secrets/{name}", authority.RoleOperator, a.putSecret)
	admin("DELETE /v1/secrets/{name}", authority.RoleAdmin, a.deleteSecret)
	admin("POST /v1/secrets/{name}/rotate", authority.RoleOperator, a.rotateSecret)
	admin("POST /v1/sys/rotate-master-key", authority.RoleAdmin, a.rotateMasterKey)
	admin("GET /v1/policy", authority.RoleAuditor, a.getPolicy)
	policyAdmin("PUT /v1/policy", authority.RoleAdmin, a.putPolicy)
	policyAdmin("POST /v1/policy/plan", authority.RoleOperator, a.planPolicy)
	admin("POST /v1/admin/tokens", authority.RoleAdmin, a.createAdmin)
	admin("GET /v1/admin/tokens", authority.RoleAdmin, a.listAdmins)
	admin("DELETE /v1/admin/tokens/{name}", authority.RoleAdmin, a.deleteAdmin)
	admin("GET /v1/audit/checkpoint", authority.RoleAuditor, a.auditCheckpoint)
	admin("GET /v1/audit/key", authority.RoleAuditor, a.auditKey)
	admin("GET /v1/audit/entries", authority.RoleAuditor, a.auditEntries)
	admin("GET /v1/audit/proof/inclusion", authority.RoleAuditor, a.auditInclusion)
	admin("GET /v1/audit/proof/consistency", authority.RoleAuditor, a.auditConsistency)
	admin("GET /v1/auth/whoami", authority.RoleAuditor, a.whoami)
	if a.cfg.Sessions != nil {
		admin("GET /v1/admin/sessions", authority.RoleAdmin, a.listSessions)
		admin("DELETE /v1/admin/sessions/{id}", authority.RoleAdmin, a.revokeSession)
	}
	a.ssoRoutes(h)

	a.mux.Handle("/", a.metrics.wrap("other", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}))
}

// ServeHTTP sets the security headers every response carries.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	if a.cfg.HSTS && r.TLS != nil {
		hd.Set("Strict-Transport-Security", "max-age=63072000")
	}
	// The gateway sees the path exactly as sent: ServeMux would clean it
	// and redirect, hiding traversal attempts the gateway must refuse.
	if a.cfg.Gateway != nil && strings.HasPrefix(r.URL.EscapedPath(), "/gw/") {
		a.cfg.Gateway.ServeHTTP(w, r)
		return
	}
	// Control-plane and exchange requests are small: bound how long one may
	// take to arrive and to be answered (the gateway streams, and bounds its
	// own upstream waits instead).
	rc := http.NewResponseController(w)
	now := time.Now()
	rc.SetReadDeadline(now.Add(30 * time.Second))
	rc.SetWriteDeadline(now.Add(60 * time.Second))
	a.mux.ServeHTTP(w, r)
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// writeError writes SPEC's error shape. Descriptions never carry tokens or
// internals.
func writeError(w http.ResponseWriter, status int, code, desc string) {
	writeErrorBody(w, status, apitype.Error{Error: code, Description: desc})
}

func writeErrorBody(w http.ResponseWriter, status int, e apitype.Error) {
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer error="`+e.Error+`"`)
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.code = e.Error
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// fail answers err: refusals with their code, unavailability with 503,
// anything else with 500 and a log line (never the error text to the client).
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var re *authority.Error
	var pe policy.Errors
	var pe1 *policy.Error
	switch {
	case errors.As(err, &re):
		if re.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "10") // an issuer's keys: refetched at most every 30 s
		}
		writeError(w, re.Status, re.Code, re.Description)
	case errors.As(err, &pe), errors.As(err, &pe1):
		writeError(w, http.StatusBadRequest, "invalid_policy", err.Error())
	case errors.Is(err, failclosed.ErrUnavailable):
		a.cfg.Logger.Error("request failed: unavailable", "route", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the server cannot record this action right now; nothing was done")
	case errors.Is(err, ErrSecretNotFound), errors.Is(err, fs.ErrNotExist): // store.ErrNotFound matches fs.ErrNotExist
		writeError(w, http.StatusNotFound, "not_found", "not found")
	case errors.Is(err, secret.ErrInvalidName):
		// A name the vault refuses is the caller's mistake, whichever
		// handler let it through: never a 500 with an error log line.
		writeError(w, http.StatusBadRequest, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
	default:
		a.cfg.Logger.Error("request failed", "route", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "server_error", "internal error")
	}
}

// healthz says the node is alive and which build it runs (as Vault's
// sys/health does), so an operator can tell the nodes of a rollout apart.
func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	v := version.Get()
	writeJSON(w, 200, apitype.Health{Status: "ok", Version: v.Version, Revision: v.Revision, Go: v.GoVersion})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	checks := map[string]string{}
	ready := true
	if err := a.ready.ping(ctx, 3*time.Second, a.cfg.Store.Ping); err != nil {
		checks["store"] = "not writable"
		if err := a.cfg.Store.SchemaNewer(); err != nil {
			checks["store"] = err.Error() // what to do about it, for the operator
		}
		ready = false
	} else {
		checks["store"] = "ok"
	}
	if err := a.cfg.Audit.Healthy(); err != nil {
		checks["audit"] = "not writable"
		ready = false
	} else {
		checks["audit"] = "ok"
	}
	status := 200
	if !ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, apitype.Ready{Ready: ready, Checks: checks})
}

func queryInt(r *http.Request, name string, def int64) (int64, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
