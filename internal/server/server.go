package server

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mayfly-sh/mayfly/internal/api"
	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/console"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/rotate"
	"github.com/mayfly-sh/mayfly/internal/scan"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

func noAddr() netip.Addr { return netip.Addr{} }

// Server is one running mayfly node.
type Server struct {
	cfg       Config
	trusted   []netip.Prefix // trusted_proxies: their connections are not capped per address
	log       *slog.Logger
	store     *store.DB
	vault     *secret.Vault
	audit     *auditlog.Log
	leases    *lease.Manager
	authority *authority.Authority
	rotations *rotate.Manager
	handler   http.Handler
	http      *http.Server
	registry  *prometheus.Registry
	clientIP  *clientip.Resolver
	// origins is where clients reach this node, for DPoP htu: public_url,
	// else the listener's own address and the TLS certificate's names.
	origins *dpop.Origins
	// certs is the TLS certificate, reloaded on SIGHUP (nil with
	// --insecure-http).
	certs *certSource
	// proxyWarned: an unlisted proxy on this host was logged (once).
	proxyWarned atomic.Bool

	bg     sync.WaitGroup
	bgCtx  context.Context
	minter *mint.Manager // minted upstream credentials (SPEC section 9)
	// pgRoles and pgSource mint PostgreSQL roles (postgres upstreams).
	pgRoles       *pgrole.Roles
	pgSource      *pgrole.Source
	pgSweepReport func(dropped int, err error)
	cancel        context.CancelFunc
	// nodeID names this node on the console's health page, once it listens.
	nodeID atomic.Pointer[string]
}

// NewLogger returns the redacting logger for format "text" or "json".
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	lv := slog.LevelInfo
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if strings.EqualFold(format, "json") {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(newRedactHandler(h))
}

// CheckLogging refuses a log format or level NewLogger does not know,
// which it would replace by text or info without a word.
func CheckLogging(format, level string) error {
	switch strings.ToLower(format) {
	case "", "text", "json":
	default:
		return fmt.Errorf("log format %q (--log-format, log_format): want text or json", format)
	}
	switch strings.ToLower(level) {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log level %q (--log-level, log_level): want debug, info, warn or error", level)
	}
	return nil
}

// New opens everything a node needs. Close releases it.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (s *Server, err error) {
	if err := CheckLogging(cfg.LogFormat, cfg.LogLevel); err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if err := CheckListen(cfg.Listen, cfg.InsecureHTTP); err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	d := datadir.Dir(cfg.DataDir)
	if err := d.Require(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = NewLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	}
	s = &Server{cfg: cfg, log: logger, registry: prometheus.NewRegistry(), origins: &dpop.Origins{Public: cfg.PublicURL}}
	if cfg.PublicURL != "" {
		if err := checkPublicURL(cfg.PublicURL); err != nil {
			return nil, err
		}
	}
	s.bgCtx, s.cancel = context.WithCancel(context.Background())
	// Every failure below returns (nil, err): keep our own handle to close
	// what was opened so far.
	opened := s
	defer func() {
		if err != nil {
			opened.Close(context.Background())
		}
	}()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	trusted, err := parseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	adminCIDRs, err := parsePrefixes(cfg.AdminCIDRs, "admin_cidrs")
	if err != nil {
		return nil, err
	}
	s.clientIP = clientip.New(trusted)
	s.trusted = trusted

	dsn := cfg.Postgres
	if dsn == "" {
		dsn = os.Getenv("MAYFLY_POSTGRES")
	}
	if hosts := unverifiedPostgresHosts(dsn); len(hosts) > 0 {
		logger.Warn("PostgreSQL connection is not verified: anyone on the network path can read and change what the store holds, and the DSN's password; use sslmode=verify-full (with sslrootcert=FILE or sslrootcert=system)",
			"hosts", strings.Join(hosts, ","))
	}
	if err := requireStore(ctx, d, dsn); err != nil {
		return nil, err
	}
	master, err := loadMasterKey(ctx, d, dsn)
	if err != nil {
		return nil, err
	}
	defer clear(master)
	s.store, err = store.Open(ctx, store.Config{Path: d.Database(), PostgresDSN: dsn, MaxConns: cfg.PostgresMaxConns, ObserveCommit: storeMetrics(s.registry)})
	if err != nil {
		return nil, err
	}
	s.vault, err = secret.Open(ctx, s.store, master, secret.Options{Logger: logger})
	clear(master)
	if err != nil {
		return nil, err
	}
	hasher, err := tokenHasher(ctx, s.vault)
	if err != nil {
		return nil, err
	}
	signer, err := readKeyFile(d.AuditKey(), "audit key")
	if err != nil {
		return nil, err
	}
	// A node whose audit key is not the log's would sign checkpoints no
	// verifier accepts: refuse it before it appends anything.
	if err := checkAuditKey(ctx, s.store, string(signer)); err != nil {
		clear(signer)
		return nil, err
	}
	// Nodes sharing PostgreSQL record entries pending and one of them at a
	// time sequences them into the log (auditlog.Options.Shared).
	// Gateway requests are answered once written unless configured to
	// wait for the disk (gateway_durable_audit): an option of the log.
	aopts := auditlog.Options{Registerer: s.registry, Shared: dsn != "", DurableRequests: cfg.GatewayDurableAudit, Logger: logger}
	if dsn == "" && auditlog.JournalSupported() {
		// Embedded SQLite has one writer, this process: gateway entries
		// go through the journal (see auditlog.Options.Journal). Nodes that
		// share PostgreSQL, and systems without the journal (not Linux),
		// commit each batch instead.
		aopts.Journal = d.AuditJournal()
	}
	s.audit, err = auditlog.Open(ctx, s.store, strings.TrimSpace(string(signer)), aopts)
	clear(signer)
	if err != nil {
		if strings.Contains(err.Error(), "in use by another process") {
			return nil, fmt.Errorf("%s: %w (its audit journal is locked): stop it first, or use it (MAYFLY_ADDR)", cfg.DataDir, ErrServerRunning)
		}
		return nil, err
	}
	if n := s.audit.Recovered(); n > 0 {
		logger.Warn("audit: entries the last run journaled but did not store were folded in", "entries", n)
	}
	var clusterSinks []*auditlog.Forwarder
	for _, sc := range cfg.AuditSinks {
		sink, err := sc.open()
		if err != nil {
			return nil, err
		}
		if sc.plainOffLoopback() {
			logger.Warn("audit sink sends the audit log unencrypted across the network: anyone on the path can read it, or drop and change entries the SIEM keeps; set tls: true", "sink", sink.Name())
		}
		fopts := auditlog.ForwarderOptions{Registerer: s.registry}
		if dsn != "" && sc.Type == "file" {
			// A file is on this node's disk: it gets the whole log, from
			// a cursor of the node's own, kept under its host name.
			if fopts.Node, _ = os.Hostname(); fopts.Node == "" {
				return nil, fmt.Errorf("audit_sinks: a file sink on PostgreSQL keeps its cursor per node, by host name, and this host's is unknown")
			}
		}
		f := auditlog.NewForwarder(s.store, sink, fopts)
		if dsn != "" && fopts.Node == "" {
			clusterSinks = append(clusterSinks, f)
			continue
		}
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			f.Run(s.bgCtx)
		}()
	}
	if len(clusterSinks) > 0 {
		// A sink with one cursor for the cluster (syslog on PostgreSQL)
		// is fed by one node at a time, as the alerts are: every node
		// forwarding from the one cursor sent entries once per node, and
		// a node that saved the cursor after a slower batch moved it back
		// over what another had sent.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.runExclusive(s.bgCtx, clusterSinksRight, func(ctx context.Context) {
				var wg sync.WaitGroup
				for _, f := range clusterSinks {
					wg.Go(func() { f.Run(ctx) })
				}
				wg.Wait()
			})
		}()
	}
	if err := s.startAlerts(ctx); err != nil {
		return nil, err
	}
	revocations, err := newRevocationCounter(s.store, s.registry)
	if err != nil {
		return nil, err
	}
	s.leases = lease.New(revocations, hasher, lease.Options{Logger: logger})
	if err := registerNodeMetrics(s.registry, s.leases); err != nil {
		return nil, err
	}
	if err := s.leases.Load(ctx); err != nil {
		return nil, err
	}
	rotObs, err := newRotationMetrics(s.registry)
	if err != nil {
		return nil, err
	}
	rotationKey, err := s.vault.SystemKey(ctx, "rotation-mac", 32)
	if err != nil {
		return nil, fmt.Errorf("rotations: MAC key: %w", err)
	}
	refusedRotations := prometheus.NewCounter(prometheus.CounterOpts{Name: "mayfly_rotation_refused_total",
		Help: "Rotation attempts refused because the stored settings' MAC does not verify (planted or edited in the database)."})
	s.registry.MustRegister(refusedRotations)
	headFloor, haveHeadFloor, err := readFloor(d.RotationHeadFloor())
	if err != nil {
		return nil, fmt.Errorf("rotations: %w", err)
	}
	s.rotations, err = rotate.New(rotate.Config{Store: s.store, Vault: s.vault, Audit: s.audit, Rotators: cfg.Rotators,
		Interval: cfg.RotationInterval, Timeout: cfg.RotationTimeout, Observer: rotObs, Logger: logger,
		Key: rotationKey, Refused: func(string) { refusedRotations.Inc() },
		HeadFloor: headFloor, HeadFollowed: floorFollower(d.RotationHeadFloor(), headFloor, logger)})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := s.sealLegacyRotations(ctx, d); err != nil {
		return nil, err
	}
	if !haveHeadFloor {
		// Once per node (the floor file is written as it follows the
		// head): see rotate.SealHead.
		if sealed, err := s.rotations.SealHead(ctx, s.store, "upgrade"); err != nil {
			return nil, err
		} else if sealed {
			s.log.Warn("rotate: sealed the rotations' head (once, at upgrade): from now on older settings put back in the database are refused")
		}
	}
	verifier := identity.NewVerifier(identity.Options{})
	admins := authority.NewAdmins(s.store, hasher, s.audit, nil)
	if cfg.AdminTokenMaxTTL < 0 {
		return nil, fmt.Errorf("config: admin_token_max_ttl must be positive")
	}
	admins.LimitTTL(cfg.AdminTokenMaxTTL)
	if err := recordAdminMaxTTL(ctx, s.store, cfg.AdminTokenMaxTTL); err != nil {
		return nil, err
	}
	if s.minter, err = s.newMinter(ctx, hasher); err != nil {
		return nil, err
	}
	if cfg.AdminSessionTTL < 0 {
		return nil, fmt.Errorf("config: admin_session_ttl must be positive")
	}
	// Sessions are looked up for leak reports also when admin_oidc is off
	// now: one signed in before still names a stored session.
	// A session's use is recorded once a minute at most: a shorter idle
	// limit would end sessions in use.
	if cfg.AdminSessionIdle != 0 && cfg.AdminSessionIdle < 2*time.Minute {
		return nil, fmt.Errorf("config: admin_session_idle must be at least 2m (a session's use is recorded to within a minute)")
	}
	sessions := authority.NewSessions(s.store, hasher, s.audit, nil, cfg.AdminSessionTTL)
	sessions.LimitIdle(cfg.AdminSessionIdle)
	policyKey, err := s.vault.SystemKey(ctx, "policy-mac", 32)
	if err != nil {
		return nil, fmt.Errorf("policy versions: MAC key: %w", err)
	}
	refusedPolicies := prometheus.NewCounter(prometheus.CounterOpts{Name: "mayfly_policy_refused_total",
		Help: "Stored policy versions refused because their MAC does not verify (planted or edited in the database), once per version."})
	s.registry.MustRegister(refusedPolicies)
	policyFloor, _, err := readFloor(d.PolicyFloor())
	if err != nil {
		return nil, fmt.Errorf("policy versions: %w", err)
	}
	s.authority = authority.New(authority.Config{
		Leases: s.leases, Verifier: verifier, Policies: revocations, Audit: s.audit, Logger: logger, AdminTokens: admins, Sessions: sessions,
		PolicyKey:      policyKey,
		PolicyRefused:  func(int64) { refusedPolicies.Inc() },
		PolicyFloor:    policyFloor,
		PolicyFollowed: floorFollower(d.PolicyFloor(), policyFloor, logger),
		Secrets:        vaultAdapter{v: s.vault},
		Rotations:      s.rotations,
		Minter:         s.minter,
		SecretExists:   func(ctx context.Context, name string) bool { _, err := s.vault.Meta(ctx, name); return err == nil },
	})
	if err := s.sealLegacyPolicies(ctx, d); err != nil {
		return nil, err
	}
	if err := s.authority.LoadPolicy(ctx); err != nil {
		if errors.Is(err, authority.ErrPolicyUnauthenticated) {
			return nil, fmt.Errorf("%w: refusing to start without a policy version to enforce; after investigating, delete that row from policy_versions (the newest authentic version is then enforced) and apply the policy again", err)
		}
		if errors.Is(err, authority.ErrPolicyRolledBack) {
			return nil, fmt.Errorf("%w: refusing to start; restore the deleted versions, or, if the database was restored from a backup on purpose, delete %s on every node and apply the policy again", err, d.PolicyFloor())
		}
		return nil, err
	}
	if len(cfg.Policy) > 0 {
		if err := s.ReloadPolicy(ctx); err != nil {
			if strings.Contains(err.Error(), "unknown secret") {
				// No server runs yet to PUT the secret to: say how to store it.
				return nil, fmt.Errorf("%w; store the secrets a policy names before the first start with: mayfly secret put NAME --data-dir %s --value-file FILE", err, cfg.DataDir)
			}
			return nil, err
		}
	}
	// Proof jtis go to the store too, so a proof cannot be replayed on
	// another node or after a restart.
	dp := dpop.NewVerifier(dpop.Options{Shared: s.store})

	var clientCAs *x509.CertPool
	if cfg.AdminClientCA != "" {
		if clientCAs, err = loadPool(cfg.AdminClientCA); err != nil {
			return nil, fmt.Errorf("admin_client_ca: %w", err)
		}
	}
	gw, err := s.newGateway(dp)
	if err != nil {
		return nil, err
	}
	leakSig, err := s.leakSignatureCheck()
	if err != nil {
		return nil, err
	}
	rp, ssoSessions, err := s.newSSO(sessions)
	if err != nil {
		return nil, err
	}
	// The web console, for humans signed in through admin_oidc (the API
	// mounts it only then).
	var ui *console.Console
	if rp != nil {
		ui, err = console.New(console.Config{Auth: console.SSOAuth{}, Store: s.store, Authority: s.authority, Leases: s.leases,
			Audit: s.audit, Secrets: vaultAdapter{s.vault, s.rotations}, Denials: admins, ClientAddr: s.clientIP.Addr, Logger: logger,
			NodeID: func() string {
				if id := s.nodeID.Load(); id != nil {
					return *id
				}
				return ""
			}})
		if err != nil {
			return nil, err
		}
		// The console's filtered audit listings read an index of the log,
		// which this sink keeps (from the first entry on a new index, from
		// its cursor after a restart, or after a run without the console).
		// Only a node that serves the console keeps it: indexing every
		// gateway entry costs a node without one CPU for nothing.
		indexer := auditlog.NewForwarder(s.store, console.Indexer{Store: s.store}, auditlog.ForwarderOptions{Registerer: s.registry, Batch: 2000})
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			indexer.Run(s.bgCtx)
		}()
	}
	a, err := api.New(api.Config{
		Authority: s.authority, Admins: admins, Leases: s.leases, Audit: s.audit, Secrets: vaultAdapter{s.vault, s.rotations},
		Store: s.store, Gateway: gw, DPoP: dp, ClientAddr: s.clientIP.Addr, PublicURL: s.publicURL,
		AdminCIDRs: adminCIDRs, AdminClientCAs: clientCAs, ParseLeakReport: parseLeakReport, VerifyLeakSignature: leakSig,
		Limits: cfg.Limits.api(), Registerer: s.registry, Gatherer: s.registry, Logger: logger, HSTS: !cfg.InsecureHTTP,
		SSO: rp, Sessions: ssoSessions, Console: consoleHandler(ui),
	})
	if err != nil {
		return nil, err
	}
	s.handler = s.warnUnlistedProxy(a)
	lim := cfg.Limits
	s.http = &http.Server{
		Handler:           s.handler, // wrapped in guard below, once the limits are known
		ConnContext:       framingConnContext,
		ReadHeaderTimeout: orDefault(lim.ReadHeaderTimeout, 10*time.Second),
		ReadTimeout:       orDefault(lim.ReadTimeout, 0), // bodies stream through the gateway: bounded per route instead
		WriteTimeout:      orDefault(lim.WriteTimeout, 0),
		IdleTimeout:       orDefault(lim.IdleTimeout, 120*time.Second),
		MaxHeaderBytes:    cmp.Or(lim.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	fo := s.framingOptions()
	s.http.Handler = guard(s.handler, fo.minRate, fo.grace)
	if !cfg.InsecureHTTP {
		certFile, keyFile := d.ServerCert(), d.ServerKey()
		own := cfg.TLSCert == "" && cfg.TLSKey == ""
		if !own {
			certFile, keyFile = cfg.TLSCert, cfg.TLSKey
		}
		if own {
			if err := completeRenewal(certFile, keyFile); err != nil {
				return nil, err
			}
		}
		if s.certs, err = newCertSource(certFile, keyFile); err != nil {
			return nil, err
		}
		// The data dir's own certificate (a year from init) is renewed from
		// its CA when it nears expiry; one given by flags is the operator's.
		// A node added with init --join has no CA key to renew it with: it
		// starts with a warning while the certificate lasts, and refuses
		// once it has expired.
		if left := time.Until(s.certs.notAfter()); own && left < RenewBefore {
			notAfter := s.certs.notAfter().Format(time.RFC3339)
			_, caErr := os.Stat(d.CAKey())
			switch {
			case caErr == nil:
				res, err := RenewCertificate(cfg.DataDir, "", nil, time.Now())
				if err != nil {
					return nil, fmt.Errorf("renew the TLS certificate (expires %s): %w", notAfter, err)
				}
				if err := s.certs.reload(time.Now()); err != nil {
					return nil, err
				}
				logger.Warn("TLS certificate renewed: it was near its expiry", "not_after", res.NotAfter, "names", res.Names)
			case !errors.Is(caErr, os.ErrNotExist):
				return nil, fmt.Errorf("renew the TLS certificate (expires %s): %w", notAfter, caErr)
			case left <= 0:
				return nil, fmt.Errorf("the TLS certificate expired at %s and this data dir has no CA key to renew it (a node added with init --join): run mayfly tls renew --data-dir %s --ca-key FILE with the cluster's ca-key.pem", notAfter, cfg.DataDir)
			default:
				logger.Warn("TLS CERTIFICATE EXPIRES SOON and this data dir has no CA key to renew it (a node added with init --join); the server will not start once it has expired: renew it with the cluster's ca-key.pem, then reload (SIGHUP)",
					"not_after", notAfter, "command", "mayfly tls renew --data-dir "+cfg.DataDir+" --ca-key FILE")
			}
		}
		s.http.TLSConfig = tlsConfig(s.certs, clientCAs)
		// The names of the certificate at start: a renewal keeps them (and
		// adds only what --tls-san gives, which needs a restart to count here).
		s.origins.Names = certNames(*s.certs.cur.Load())
	}
	return s, nil
}

// framingOptions are the limits every connection's framingConn applies.
func (s *Server) framingOptions() framingOptions {
	lim := s.cfg.Limits
	rate := lim.MinBodyRate
	switch {
	case rate == 0:
		rate = 1024
	case rate < 0:
		rate = 0
	}
	return framingOptions{
		maxHead:   s.http.MaxHeaderBytes + 4096, // as net/http allows
		minRate:   rate,
		grace:     orDefault(lim.BodyRateGrace, 10*time.Second),
		handshake: orDefault(lim.ReadHeaderTimeout, 10*time.Second),
		log:       s.log,
		maxConns:  cmp.Or(lim.MaxConnsPerAddress, DefaultMaxConnsPerAddress),
		exempt:    s.trusted,
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// warnUnlistedProxy logs, once, a request from a loopback peer that is not
// a trusted proxy and carries X-Forwarded-For or Forwarded: a reverse proxy
// on this host that trusted_proxies does not list. Every caller then has
// the proxy's address, so admin_cidrs' default (loopback) admits them all
// and they share one rate limit. Only a loopback peer counts: anyone else
// may send these headers to make the log say what they like.
func (s *Server) warnUnlistedProxy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.proxyWarned.Load() && (len(r.Header["X-Forwarded-For"]) > 0 || len(r.Header["Forwarded"]) > 0) {
			if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && ap.Addr().Unmap().IsLoopback() &&
				!s.clientIP.Trusted(ap.Addr()) && s.proxyWarned.CompareAndSwap(false, true) {
				s.log.Warn("requests come through a proxy on this host that trusted_proxies does not list: every caller counts as "+ap.Addr().Unmap().String()+
					" (admin_cidrs, which default to loopback, admit them all; they share one rate limit); list the proxy in trusted_proxies",
					"peer", ap.Addr().Unmap().String())
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Handler is the node's whole HTTP surface (for in-process tests).
func (s *Server) Handler() http.Handler { return s.handler }

// publicURL is the scheme://host DPoP proofs must name (htu): from
// configuration, never from the request's Host alone.
func (s *Server) publicURL(r *http.Request) string { return s.origins.Of(r) }

// checkPublicURL wants scheme://host[:port], nothing more: the path of a
// proof's htu is the request's own.
func checkPublicURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		strings.TrimRight(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("public_url %q must be scheme://host[:port] (http or https), with no path, query or user", raw)
	}
	return nil
}

// ReloadPolicy reads the --policy files and applies them (a new version
// only when they differ from the version in force).
func (s *Server) ReloadPolicy(ctx context.Context) error {
	if len(s.cfg.Policy) == 0 {
		return nil
	}
	files, err := policy.ReadPaths(s.cfg.Policy...)
	if err != nil {
		return err
	}
	res, err := s.authority.ApplyPolicy(ctx, files, "policy-file")
	if err != nil {
		return err
	}
	if !res.Unchanged {
		s.log.Info("policy applied", "version", res.Version, "changes", len(res.Changes), "revoked", res.Revoked)
	}
	return nil
}

// ReloadTLS reads the TLS certificate and key files again (after
// `mayfly tls renew` or a replacement); new connections get the new
// certificate, open ones keep theirs. On an error the old one stays.
func (s *Server) ReloadTLS() error {
	if s.certs == nil {
		return nil
	}
	if err := s.certs.reload(time.Now()); err != nil {
		return err
	}
	s.log.Info("TLS certificate loaded", "not_after", s.certs.notAfter().UTC())
	return nil
}

// Serve listens and serves until ctx ends, then shuts down gracefully:
// in-flight requests finish (up to the shutdown timeout), background work
// stops, stores close.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	scheme := "https"
	if s.cfg.InsecureHTTP {
		scheme = "http"
	}
	url := scheme + "://" + ln.Addr().String()
	bgCtx := s.bgCtx
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.minter.Run(bgCtx)
	}()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.sweepRoles(bgCtx)
	}()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.leases.Run(bgCtx)
	}()
	// Secrets due for rotation: this node and any other of the cluster
	// check; a claim in the store gives each secret to one of them.
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.rotations.Run(bgCtx)
	}()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		sweep := time.NewTicker(10 * time.Minute)
		defer sweep.Stop()
		// Other nodes of a cluster may apply policy versions: follow them.
		sync := time.NewTicker(2 * time.Second)
		defer sync.Stop()
		for {
			select {
			case <-bgCtx.Done():
				return
			case <-sweep.C:
				s.store.SweepJTIs(bgCtx, time.Now().Add(-2*time.Minute))
				// Expired sessions a day late, so a session list still
				// shows what just expired; abandoned sign-ins at once.
				now := time.Now()
				s.store.SweepAdminSessions(bgCtx, now.Add(-24*time.Hour), now)
			case <-sync.C:
				if err := s.authority.SyncPolicy(bgCtx); err != nil && bgCtx.Err() == nil {
					s.log.Warn("policy sync failed", "err", err)
				}
			}
		}
	}()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.heartbeat(bgCtx, ln.Addr().String())
	}()
	s.audit.Add(ctx, audit.Event{Type: audit.TypeServerStart, Status: 200, Detail: map[string]any{"listen": ln.Addr().String(), "backend": s.store.Backend()}}).Wait(ctx)
	if mln, mtls := s.listenMetrics(); mln != nil {
		mctx, stopMetrics := context.WithCancel(ctx)
		defer stopMetrics()
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.serveMetrics(mctx, mln, mtls)
		}()
	}
	errc := make(chan error, 1)
	go func() {
		// Every connection's request framing is checked before net/http
		// reads it (framing.go); TLS handshakes happen in the listener.
		errc <- s.http.Serve(newFramingListener(ln, s.http.TLSConfig, s.framingOptions()))
	}()
	s.log.Info("listening", "url", url, "backend", s.store.Backend())
	if s.cfg.AddrFile != "" {
		writeAddrFile(s.cfg.AddrFile, url)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancelShutdown := context.WithTimeout(context.Background(), orDefault(s.cfg.Limits.ShutdownTimeout, 20*time.Second))
	defer cancelShutdown()
	err = s.http.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close stops background work and closes the audit log and stores.
func (s *Server) Close(ctx context.Context) error {
	if s.cancel != nil {
		s.cancel()
	}
	s.bg.Wait()
	if s.pgRoles != nil {
		s.pgRoles.Close()
	}
	var err error
	if s.audit != nil {
		err = errors.Join(err, s.audit.Close(ctx))
	}
	if s.vault != nil {
		s.vault.Close()
	}
	if s.store != nil {
		err = errors.Join(err, s.store.Close())
	}
	return err
}

func parseLeakReport(body []byte) ([]string, string, string, error) {
	r := scan.ParseLeakReport(body)
	if r.Truncated {
		// Never take part of a report: the tokens left out would stay live.
		return nil, "", "", fmt.Errorf("%w: more than %d", api.ErrLeakReportTooLarge, scan.MaxLeakTokens)
	}
	// Minted credentials (mfyp_, ghs_) and admin sessions (mfys_) go with
	// the tokens: the authority tells them apart and finds each by keyed
	// hash.
	all := make([]string, 0, len(r.Tokens)+len(r.Passwords)+len(r.GitHubTokens)+len(r.Sessions))
	all = append(append(append(append(all, r.Tokens...), r.Passwords...), r.GitHubTokens...), r.Sessions...)
	return all, r.Source, r.URL, nil
}

func (s *Server) leakSignatureCheck() (func(*http.Request, []byte) (bool, error), error) {
	if len(s.cfg.GitHubLeakKeys) == 0 {
		return nil, nil
	}
	keys := map[string]*ecdsa.PublicKey{}
	for id, p := range s.cfg.GitHubLeakKeys {
		k, err := scan.ParseGitHubPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("github_leak_keys[%s]: %w", id, err)
		}
		keys[id] = k
	}
	return func(r *http.Request, body []byte) (bool, error) {
		id, sig := r.Header.Get("Github-Public-Key-Identifier"), r.Header.Get("Github-Public-Key-Signature")
		if id == "" && sig == "" {
			return false, nil
		}
		return true, scan.VerifyGitHubSignature(body, id, sig, keys)
	}, nil
}

// vaultAdapter shows the vault to the API as metadata only, with each
// secret's rotation state.
type vaultAdapter struct {
	v   *secret.Vault
	rot *rotate.Manager // nil: no rotation state shown
}

func apiMeta(m secret.Meta, st *rotate.State) api.SecretMeta {
	out := api.SecretMeta{Name: m.Name, Version: m.Version, KeyVersion: m.KeyVersion, CreatedAt: m.CreatedAt}
	if st == nil {
		return out
	}
	r := &apitype.SecretRotation{NextAt: st.NextAt, LastVersion: st.LastVersion, Failures: st.Failures, LastError: st.LastError}
	r.Every = time.Duration(st.Spec.Every).String()
	r.Grace = st.Spec.GraceOrDefault().String()
	if p := st.Spec.Via.PostgresPassword; p != nil {
		r.Via.PostgresPassword = &apitype.RotatePostgres{AdminDSNSecret: p.AdminDSNSecret, Role: p.Role}
	}
	r.Via.Command = st.Spec.Via.Command
	if !st.LastAt.IsZero() {
		t := st.LastAt
		r.LastAt = &t
	}
	if !st.LastErrorAt.IsZero() {
		t := st.LastErrorAt
		r.LastErrorAt = &t
	}
	out.Rotation = r
	return out
}

func (a vaultAdapter) Put(ctx context.Context, name string, value []byte, rc *store.RotationChange, n *store.Note) (int, error) {
	v, err := a.v.PutRotating(ctx, name, value, rc, n)
	if errors.Is(err, secret.ErrInvalidName) || errors.Is(err, secret.ErrInvalidValue) {
		return 0, api.ErrInvalidSecret
	}
	return v, err
}

func (a vaultAdapter) List(ctx context.Context) ([]api.SecretMeta, error) {
	ms, err := a.v.List(ctx)
	if err != nil {
		return nil, err
	}
	var states map[string]rotate.State
	if a.rot != nil {
		if states, err = a.rot.All(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]api.SecretMeta, len(ms))
	for i, m := range ms {
		var st *rotate.State
		if s, ok := states[m.Name]; ok {
			st = &s
		}
		out[i] = apiMeta(m, st)
	}
	return out, nil
}

func (a vaultAdapter) Meta(ctx context.Context, name string) (api.SecretMeta, error) {
	m, err := a.v.Meta(ctx, name)
	if errors.Is(err, secret.ErrNotFound) {
		return api.SecretMeta{}, api.ErrSecretNotFound
	}
	if err != nil || a.rot == nil {
		return apiMeta(m, nil), err
	}
	st, err := a.rot.Get(ctx, name)
	if errors.Is(err, rotate.ErrNoRotation) {
		return apiMeta(m, nil), nil
	}
	if err != nil {
		return api.SecretMeta{}, err
	}
	return apiMeta(m, &st), nil
}

func (a vaultAdapter) Delete(ctx context.Context, name string, n *store.Note) error {
	err := a.v.DeleteNoted(ctx, name, n)
	if errors.Is(err, secret.ErrNotFound) {
		return api.ErrSecretNotFound
	}
	return err
}

func (a vaultAdapter) RotateMasterKey(ctx context.Context, n *store.Note) (int, bool, error) {
	return a.v.RotateMasterKeyNoted(ctx, n)
}

func (s *Server) logger() *slog.Logger { return s.log }

// storeMetrics reports group commits: latency, writes per commit, failures.
func storeMetrics(reg prometheus.Registerer) func(time.Duration, int, error) {
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mayfly_store_commit_seconds",
		Help: "Latency of durable group commits.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)})
	size := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mayfly_store_commit_writes",
		Help: "Writes carried by one group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "mayfly_store_commit_errors_total", Help: "Group commits that failed."})
	reg.MustRegister(lat, size, errs)
	return func(d time.Duration, n int, err error) {
		lat.Observe(d.Seconds())
		size.Observe(float64(n))
		if err != nil {
			errs.Inc()
		}
	}
}

// writeAddrFile replaces path with url, whole or not at all (mode 0644:
// others read it to find the server). A failure leaves the old file.
func writeAddrFile(path, url string) { _ = writeFileAtomic(path, []byte(url+"\n"), 0o644) }
