package gateway

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec   // upstream, code class
	latency  *prometheus.HistogramVec // upstream
	bytesIn  *prometheus.CounterVec   // upstream
	bytesOut *prometheus.CounterVec   // upstream
	refused  *prometheus.CounterVec   // check
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_gateway_requests_total",
			Help: "Gateway requests by upstream (\"-\" when unknown) and status class."}, []string{"upstream", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mayfly_gateway_request_duration_seconds",
			Help:    "Time from request to the end of the response, by upstream.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)}, []string{"upstream"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_gateway_request_bytes_total",
			Help: "Request body bytes forwarded to upstreams."}, []string{"upstream"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_gateway_response_bytes_total",
			Help: "Response body bytes sent to clients."}, []string{"upstream"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_gateway_refused_total",
			Help: "Requests refused by the gateway, by the check that refused them."}, []string{"check"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.latency, m.bytesIn, m.bytesOut, m.refused} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, fmt.Errorf("gateway: metrics already registered: %w", err)
				}
				return nil, fmt.Errorf("gateway: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func (m *metrics) observe(upstream string, status int, d time.Duration, in, out int64) {
	class := "5xx"
	if c := status/100 - 1; c >= 0 && c < len(codeClasses) {
		class = codeClasses[c]
	}
	m.requests.WithLabelValues(upstream, class).Inc()
	m.latency.WithLabelValues(upstream).Observe(d.Seconds())
	if in > 0 {
		m.bytesIn.WithLabelValues(upstream).Add(float64(in))
	}
	if out > 0 {
		m.bytesOut.WithLabelValues(upstream).Add(float64(out))
	}
}
