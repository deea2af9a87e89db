package writer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons an incident message ends without a Kubernetes write, counted by
// stormweir_writer_skipped_total.
const (
	skipStale    = "stale_revision"
	skipFoldFull = "fold_list_full"
)

// metrics are the writer's own metrics, next to the worker loop's.
type metrics struct {
	created   prometheus.Counter
	updated   prometheus.Counter
	folded    prometheus.Counter
	api       *prometheus.CounterVec
	coalesced prometheus.Counter
	latency   prometheus.Histogram
	skipped   *prometheus.CounterVec
	ended     prometheus.Counter
	refreshed prometheus.Counter
	auditLost prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_writer_crs_created_total",
			Help: "RemediationRequests created (an AlreadyExists answer is not counted).",
		}),
		updated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_writer_crs_updated_total",
			Help: "Status writes (server-side apply) to RemediationRequests; one write carries many coalesced updates.",
		}),
		folded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_writer_folded_total",
			Help: "Incidents folded into an active RemediationRequest of the same fingerprint instead of getting their own.",
		}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_writer_api_requests_total",
			Help: "Requests to the Kubernetes API server by HTTP method and status code (\"error\" when no response came).",
		}, []string{"method", "code"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_writer_coalesced_updates_total",
			Help: "Status updates that rode on another update's write instead of costing a write of their own.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stormweir_writer_e2e_latency_seconds",
			Help:    "Time from receipt of the signal at the receiver to the Kubernetes write that carries it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_writer_skipped_total",
			Help: "Incident messages acked without a Kubernetes write, by reason.",
		}, []string{"reason"}),
		ended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_writer_incidents_ended_total",
			Help: "Incident records ended because their RemediationRequest reached a terminal phase.",
		}),
		refreshed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_writer_events_refreshed_total",
			Help: "Incident events written with their record's newer state (read from the incident record) because the writer was behind.",
		}),
	}
	m.auditLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "stormweir_writer_audit_lost_total",
		Help: "Write records (for review) not stored on the audit subject; the writes themselves were done.",
	})
	reg.MustRegister(m.created, m.updated, m.folded, m.api, m.coalesced, m.latency, m.skipped, m.ended, m.refreshed, m.auditLost)
	return m
}

// countingTransport counts every request to the API server by method and
// status code; it wraps the rest.Config transport, so the client, the
// informers and the readiness probe are all counted.
type countingTransport struct {
	next http.RoundTripper
	api  *prometheus.CounterVec
}

// RoundTrip implements http.RoundTripper.
func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
		if a, ok := r.Context().Value(answerKey{}).(*lastAnswer); ok {
			a.set(resp)
		}
	}
	t.api.WithLabelValues(r.Method, code).Inc()
	return resp, err
}

// answerKey carries a call's *lastAnswer in its context to the transport.
type answerKey struct{}

// lastAnswer is the status of the last response one API call got, and
// its Retry-After. client-go retries a 429 or 5xx carrying Retry-After
// inside the call, sleeping as told; when the call's timeout ends that
// sleep, the error says only "context deadline exceeded", and the last
// answer is what tells throttling from a server that did not answer.
type lastAnswer struct {
	mu         sync.Mutex
	code       int
	retryAfter time.Duration
}

func (a *lastAnswer) set(resp *http.Response) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.code, a.retryAfter = resp.StatusCode, 0
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		a.retryAfter = time.Duration(s) * time.Second
	}
}

func (a *lastAnswer) get() (int, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.code, a.retryAfter
}

// busyError is a call that ran out of time while the server kept
// answering 429 or 5xx (see lastAnswer); classify retries it as throttled
// or as a server error, after Retry-After, not as a timeout.
type busyError struct {
	err        error
	code       int
	retryAfter time.Duration
}

func (e *busyError) Error() string {
	return fmt.Sprintf("%v (the API server last answered %d %s)", e.err, e.code, http.StatusText(e.code))
}
func (e *busyError) Unwrap() error { return e.err }

// maxInFlightRequests bounds the writer's concurrent API requests (see
// apiCalls; the informers' few lists and watches are not counted). Thousands of handlers may write at once; past the server's
// HTTP/2 stream limit per connection (250 by default) Go opens another
// TLS connection for each extra request and drops it when idle, and the
// handshakes cost both sides more than the writes (seen as ~60% of the
// writer's CPU under a burst of new incidents). Queuing here keeps every
// request on one connection.
const maxInFlightRequests = 64

// apiCalls admits the writer's own API requests (creates, applies, live
// reads), at most maxInFlightRequests at once, and gives each its timeout
// only once admitted. Under a burst thousands of handlers queue here; if
// the queueing ate into the request's timeout, creates would time out
// after they were sent and their retries would cost the API server an
// AlreadyExists each.
type apiCalls struct {
	slots   chan struct{}
	timeout time.Duration
}

func newAPICalls(timeout time.Duration) *apiCalls {
	return &apiCalls{slots: make(chan struct{}, maxInFlightRequests), timeout: timeout}
}

// do runs fn with a slot held and a context bounded by the timeout
// (writer.request_timeout). A call that timed out while the server was
// answering 429 or 5xx returns a *busyError.
func (a *apiCalls) do(ctx context.Context, fn func(ctx context.Context) error) error {
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.slots }()
	last := &lastAnswer{}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, answerKey{}, last), a.timeout)
	defer cancel()
	err := fn(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		if code, after := last.get(); code == http.StatusTooManyRequests || code >= 500 {
			return &busyError{err: err, code: code, retryAfter: after}
		}
	}
	return err
}
