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
	// rejected counts rejected signals by reason; refused, requests
	// refused whole by reason; inflight, the body bytes of the requests
	// in flight (receiver.max_inflight_bytes).
	rejected *prometheus.CounterVec
	refused  *prometheus.CounterVec
	inflight prometheus.Gauge
	// busFull counts signals refused because the bus was full.
	busFull prometheus.Counter

	// bySource caches each endpoint's series, so a request does not hash
	// label values to find them.
	bySource sync.Map // string → *sourceMetrics
}

// sourceMetrics are one endpoint's series.
type sourceMetrics struct {
	accepted202                                    prometheus.Counter
	latency                                        prometheus.Observer
	accepted, duplicate, rejected, ignored, failed prometheus.Counter
	// invalid and tooLarge are rejected by reason.
	invalid, tooLarge prometheus.Counter
}

// Reasons of stormweir_receiver_rejected_total: why one item of a
// request was refused while its siblings were stored.
const (
	rejectedInvalid  = "invalid"
	rejectedTooLarge = "over_max_payload"
)

// Reasons of stormweir_receiver_refused_total: why a whole request was
// refused before it was read.
const (
	refusedBodyTooLarge = "body_too_large"
	refusedInflight     = "inflight_limit"
)

func newMetrics(reg prometheus.Registerer, maxInflight int64) *metrics {
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
	m.busFull = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "stormweir_receiver_bus_full_total",
		Help: "Signals answered 503 because JetStream had no room for them: the signals stream at its max_bytes or max_msgs (the deduper is behind), or the server's store full. The sender retries them; they are also counted as failed in stormweir_receiver_signals_total.",
	})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stormweir_receiver_rejected_total",
		Help: "Webhook items rejected alone, their siblings stored, by source and reason: invalid (not decodable or not valid), over_max_payload (its encoded signal exceeds the bus's max payload).",
	}, []string{"source", "reason"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stormweir_receiver_refused_total",
		Help: "Webhook requests refused whole before their body was decoded, by reason: body_too_large (413, over receiver.max_body_bytes), inflight_limit (503, receiver.max_inflight_bytes taken by the requests in flight; the sender retries).",
	}, []string{"reason"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "stormweir_receiver_inflight_bytes",
		Help: "Body bytes of the webhook requests being handled, reserved in receiver.max_inflight_bytes.",
	})
	inflightLimit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "stormweir_receiver_inflight_limit_bytes",
		Help: "receiver.max_inflight_bytes: the body bytes the requests in flight may hold together.",
	})
	inflightLimit.Set(float64(maxInflight))
	for _, r := range []string{refusedBodyTooLarge, refusedInflight} {
		m.refused.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.signals, m.latency, m.publish, m.auditLost, m.rejected, m.refused, m.inflight, inflightLimit, m.busFull)
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
		invalid:     m.rejected.WithLabelValues(src, rejectedInvalid),
		tooLarge:    m.rejected.WithLabelValues(src, rejectedTooLarge),
	}
	actual, _ := m.bySource.LoadOrStore(src, s)
	return actual.(*sourceMetrics)
}
