package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	exchanges *prometheus.CounterVec // result, reason
	leaks     *prometheus.CounterVec // outcome
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mayfly_http_requests_total", Help: "API requests by route and HTTP status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mayfly_http_request_duration_seconds", Help: "API request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		// Reasons are the OAuth error codes of the answer (a fixed set),
		// never anything the caller sent.
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mayfly_exchanges_total",
			Help: "Token exchanges by result (issued, refused, failed) and reason (the error code; \"\" when issued).",
		}, []string{"result", "reason"}),
		leaks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mayfly_leaked_tokens_total",
			Help: "Tokens named in leak reports, by outcome: revoked, already_revoked, unknown.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.exchanges, m.leaks} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
	code   string // the error code of an error answer (writeError)
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = 200
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// wrap counts and times a route. Labels are route patterns, never raw
// paths, so cardinality stays fixed.
func (m *metrics) wrap(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		if sw.status == 0 {
			sw.status = 200
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// countExchange records the outcome of one exchange from its answer.
func (m *metrics) countExchange(fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fn(w, r)
		sw, ok := w.(*statusWriter)
		if !ok {
			return
		}
		result := "issued"
		switch {
		case sw.status >= 500:
			result = "failed"
		case sw.status >= 400:
			result = "refused"
		}
		m.exchanges.WithLabelValues(result, sw.code).Inc()
	}
}

// countLeaks records what one leak report did with the tokens it named.
func (m *metrics) countLeaks(revoked, already, unknown int) {
	m.leaks.WithLabelValues("revoked").Add(float64(revoked))
	m.leaks.WithLabelValues("already_revoked").Add(float64(already))
	m.leaks.WithLabelValues("unknown").Add(float64(unknown))
}
