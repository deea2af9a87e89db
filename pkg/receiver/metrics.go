package receiver

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	signals  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	publish  prometheus.Histogram
	// auditLost counts records of rejected and ignored items not stored (review).
	auditLost prometheus.Counter

	// bySource caches each endpoint's series, so a request does not hash
	// label values to find them.
	bySource sync.Map // string → *sourceMetrics
}

// sourceMetrics are one endpoint's series.
type sourceMetrics struct {
	accepted202                                    prometheus.Counter
	latency                                        prometheus.Observer
	accepted, duplicate, rejected, ignored, failed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_receiver_requests_total",
			Help: "Webhook requests by endpoint and HTTP status code.",
		}, []string{"endpoint", "code"}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_receiver_signals_total",
			Help: "Signals by source and result: accepted (stored), duplicate (stored before, absorbed by msg-id), rejected (invalid), ignored (Normal events, Grafana contact point tests), failed (not stored; the sender was told to retry).",
		}, []string{"source", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stormweir_receiver_request_seconds",
			Help:    "Time to answer a webhook request, publishing included.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 14),
		}, []string{"endpoint"}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stormweir_receiver_publish_seconds",
			Help:    "Time from the first publish of a request to the last JetStream acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}),
	}
	m.auditLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "stormweir_receiver_audit_lost_total",
		Help: "Records of rejected and ignored webhook items (for review) not stored on the audit subject.",
	})
	reg.MustRegister(m.requests, m.signals, m.latency, m.publish, m.auditLost)
	return m
}

// source returns the series of endpoint src (a signal source).
func (m *metrics) source(src string) *sourceMetrics {
	if s, ok := m.bySource.Load(src); ok {
		return s.(*sourceMetrics)
	}
	s := &sourceMetrics{
		accepted202: m.requests.WithLabelValues(src, strconv.Itoa(http.StatusAccepted)),
		latency:     m.latency.WithLabelValues(src),
		accepted:    m.signals.WithLabelValues(src, "accepted"),
		duplicate:   m.signals.WithLabelValues(src, "duplicate"),
		rejected:    m.signals.WithLabelValues(src, "rejected"),
		ignored:     m.signals.WithLabelValues(src, "ignored"),
		failed:      m.signals.WithLabelValues(src, "failed"),
	}
	actual, _ := m.bySource.LoadOrStore(src, s)
	return actual.(*sourceMetrics)
}
