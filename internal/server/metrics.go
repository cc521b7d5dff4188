package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/version"
)

// DefaultMetricsListen is where the unauthenticated /metrics listens unless
// told otherwise: loopback, so that upstream names and traffic are not shown
// to the networks the gateway serves. "off" turns it off; on the API's
// listener /metrics answers the auditor role only.
const DefaultMetricsListen = "127.0.0.1:9464"

// registerNodeMetrics adds what describes the node as a whole: the build
// it runs and the tokens that would work right now.
func registerNodeMetrics(reg prometheus.Registerer, leases *lease.Manager) error {
	v := version.Get()
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mayfly_build_info",
		Help: "The mayfly build this node runs (always 1): version, VCS revision, Go version."},
		[]string{"version", "revision", "goversion"})
	bi.WithLabelValues(v.Version, v.Revision, v.GoVersion).Set(1)
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mayfly_leases_active",
		Help: "Job tokens held in this node's memory (issued or used here, or live at its start) that are neither expired nor revoked."},
		func() float64 { return float64(leases.Active()) })
	for _, c := range []prometheus.Collector{bi, active} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// revocationCounter counts revoked leases by cause, from the reason every
// revocation is stored with. It wraps the lease manager's store, so every
// path that revokes (holder, leak report, admin, policy change) is counted
// once, by the node that did it.
type revocationCounter struct {
	*store.DB
	revoked *prometheus.CounterVec
}

func newRevocationCounter(db *store.DB, reg prometheus.Registerer) (*revocationCounter, error) {
	c := &revocationCounter{DB: db, revoked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_leases_revoked_total",
		Help: "Job tokens revoked by this node, by cause: holder, leak, admin, policy, other."}, []string{"cause"})}
	for _, cause := range revocationCauses {
		c.revoked.WithLabelValues(cause)
	}
	if err := reg.Register(c.revoked); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return c, nil
}

var revocationCauses = []string{"holder", "leak", "admin", "policy", "other"}

// revocationCause maps a stored revocation reason to a label from a fixed
// set (the reason may carry a name; the label never does).
func revocationCause(reason string) string {
	switch {
	case reason == "revoked by holder":
		return "holder"
	case reason == "leaked":
		return "leak"
	case strings.HasPrefix(reason, "admin "):
		return "admin"
	case strings.HasPrefix(reason, "policy "):
		return "policy"
	}
	return "other"
}

func (c *revocationCounter) count(reason string, n int) {
	if n > 0 {
		c.revoked.WithLabelValues(revocationCause(reason)).Add(float64(n))
	}
}

func (c *revocationCounter) RevokeLeases(ctx context.Context, f store.LeaseFilter, at time.Time, reason string) ([]string, error) {
	return c.RevokeLeasesNoted(ctx, f, at, reason, nil)
}

func (c *revocationCounter) RevokeLeasesNoted(ctx context.Context, f store.LeaseFilter, at time.Time, reason string, n *store.Note) ([]string, error) {
	ids, err := c.DB.RevokeLeasesNoted(ctx, f, at, reason, n)
	c.count(reason, len(ids))
	return ids, err
}

func (c *revocationCounter) RevokeLeaked(ctx context.Context, k store.Leaked, at time.Time, reason string, n *store.Note) (store.Changes, error) {
	ch, err := c.DB.RevokeLeaked(ctx, k, at, reason, n)
	c.count(reason, len(ch.Leases))
	return ch, err
}

func (c *revocationCounter) ApplyPolicyVersion(ctx context.Context, p store.PolicyVersion, removed []string, reason string, n *store.Note) (int64, map[string][]string, error) {
	v, byGrant, err := c.DB.ApplyPolicyVersion(ctx, p, removed, reason, n)
	for _, ids := range byGrant {
		c.count(reason, len(ids))
	}
	return v, byGrant, err
}

// listenMetrics opens the metrics listener, or returns nil when there is
// none, with the TLS configuration to serve it with (nil: plain HTTP).
// Plain HTTP is allowed on loopback; elsewhere it is TLS with the API's
// certificate. A listener that cannot bind is logged, not fatal: metrics
// are not worth refusing tokens for, and /metrics stays on the API for
// auditors.
func (s *Server) listenMetrics() (net.Listener, *tls.Config) {
	addr := s.cfg.MetricsListen
	if addr == "" || addr == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.log.Error("metrics listener not started; /metrics is still served to auditors on the API listener", "addr", addr, "err", err)
		return nil, nil
	}
	scheme := "http"
	var tlsCfg *tls.Config
	if CheckListen(addr, true) != nil {
		if s.http.TLSConfig == nil {
			ln.Close()
			s.log.Error("metrics listener not started: plain HTTP is allowed only on loopback, and the server runs without TLS", "addr", addr)
			return nil, nil
		}
		tlsCfg = s.http.TLSConfig
		scheme = "https"
	}
	s.log.Info("metrics listening", "url", scheme+"://"+ln.Addr().String()+"/metrics")
	return ln, tlsCfg
}

// serveMetrics serves /metrics alone on ln until ctx ends. Its connections
// get the API listener's framing checks and body rate (framing.go): a
// front proxy may share them with other traffic.
func (s *Server) serveMetrics(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	fo := s.framingOptions()
	fo.maxHead = 16<<10 + 4096
	srv := &http.Server{Handler: guard(mux, fo.minRate, fo.grace), ConnContext: framingConnContext, TLSConfig: tlsCfg,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(newFramingListener(ln, tlsCfg, fo)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics listener stopped", "err", err)
	}
}

// rotationMetrics counts secret rotations by secret and result, and shows
// each rotated secret's failed attempts since its last success (kept in
// step with the store, so another node's attempts show here too). A
// secret name is metadata, never a value.
type rotationMetrics struct {
	total   *prometheus.CounterVec
	failing *prometheus.GaugeVec
}

func newRotationMetrics(reg prometheus.Registerer) (*rotationMetrics, error) {
	m := &rotationMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_secret_rotations_total",
			Help: "Secret rotation attempts made by this node, by secret and result (ok, failed)."}, []string{"secret", "result"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mayfly_secret_rotation_failures",
			Help: "Failed rotation attempts of each rotated secret since its last success (0: healthy); the current value stays in use."}, []string{"secret"}),
	}
	for _, c := range []prometheus.Collector{m.total, m.failing} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return m, nil
}

func (m *rotationMetrics) Rotated(secret string, ok bool) {
	r := "ok"
	if !ok {
		r = "failed"
	}
	m.total.WithLabelValues(secret, r).Inc()
}

func (m *rotationMetrics) Failing(secret string, failures int) {
	if failures < 0 {
		m.failing.DeleteLabelValues(secret)
		return
	}
	m.failing.WithLabelValues(secret).Set(float64(failures))
}
