package gateway

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec   // upstream, code class
	latency  *prometheus.HistogramVec // upstream
	bytesIn  *prometheus.CounterVec   // upstream
	bytesOut *prometheus.CounterVec   // upstream
	refused  *prometheus.CounterVec   // check

	// ups caches each upstream label's series (*upstreamMetrics): four
	// label lookups per request, each under the vector's lock, showed at
	// saturation. Labels are the policy's upstream names and "-".
	ups sync.Map
}

// upstreamMetrics is one upstream label's series.
type upstreamMetrics struct {
	requests          [len(codeClasses)]prometheus.Counter
	latency           prometheus.Observer
	bytesIn, bytesOut prometheus.Counter
}

func (m *metrics) upstream(name string) *upstreamMetrics {
	if u, ok := m.ups.Load(name); ok {
		return u.(*upstreamMetrics)
	}
	u := &upstreamMetrics{latency: m.latency.WithLabelValues(name),
		bytesIn: m.bytesIn.WithLabelValues(name), bytesOut: m.bytesOut.WithLabelValues(name)}
	for i, c := range codeClasses {
		u.requests[i] = m.requests.WithLabelValues(name, c)
	}
	v, _ := m.ups.LoadOrStore(name, u)
	return v.(*upstreamMetrics)
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
	u := m.upstream(upstream)
	class := len(codeClasses) - 1 // 5xx
	if c := status/100 - 1; c >= 0 && c < len(codeClasses) {
		class = c
	}
	u.requests[class].Inc()
	u.latency.Observe(d.Seconds())
	if in > 0 {
		u.bytesIn.Add(float64(in))
	}
	if out > 0 {
		u.bytesOut.Add(float64(out))
	}
}
