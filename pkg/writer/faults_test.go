package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Faults a faultProxy injects into the writes of RemediationRequests.
const (
	faultNone = ""
	// faultForbidden answers 403 as a ResourceQuota would.
	faultForbidden = "forbidden"
	// faultThrottled answers 429 with a Retry-After longer than the
	// writer's request timeout, as API Priority and Fairness does when
	// it sheds load.
	faultThrottled = "throttled"
	// faultServerError answers 500 and 503 in turn, without Retry-After.
	faultServerError = "server_error"
	// faultSlow passes the write to the API server, which stores it, and
	// holds the answer until the writer gives up waiting: the write is
	// done but the writer does not know.
	faultSlow = "slow"
)

// faultProxy is a reverse proxy in front of the test API server that
// injects the current fault into every create and status write of a
// RemediationRequest; reads and watches pass through.
type faultProxy struct {
	upstream http.RoundTripper
	rp       *httputil.ReverseProxy
	fault    atomic.Value // string
	mu       sync.Mutex
	injected map[string]int
}

func startFaultProxy(t testing.TB) (*faultProxy, *rest.Config) {
	t.Helper()
	target, err := url.Parse(testRest.Host)
	require.NoError(t, err)
	upstream, err := rest.TransportFor(testRest)
	require.NoError(t, err)
	p := &faultProxy{upstream: upstream, injected: map[string]int{}}
	p.fault.Store(faultNone)
	p.rp = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     upstream,
		FlushInterval: -1, // watches stream
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, &rest.Config{Host: srv.URL, QPS: testRest.QPS, Burst: testRest.Burst}
}

func (p *faultProxy) set(f string) { p.fault.Store(f) }

func (p *faultProxy) count(f string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected[f]
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := p.fault.Load().(string)
	if f == faultNone || (r.Method != http.MethodPost && r.Method != http.MethodPatch) || !strings.Contains(r.URL.Path, "/remediationrequests") {
		p.rp.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	p.injected[f]++
	n := p.injected[f]
	p.mu.Unlock()
	switch f {
	case faultForbidden:
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden,
			`remediationrequests.stormweir.io is forbidden: exceeded quota: rr-quota, requested: count/remediationrequests.stormweir.io=1, used: count/remediationrequests.stormweir.io=500, limited: count/remediationrequests.stormweir.io=500`, 0)
	case faultThrottled:
		w.Header().Set("Retry-After", "2")
		writeStatus(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, "too many requests, please try again later", 2)
	case faultServerError:
		if n%2 == 0 {
			writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "etcdserver: leader changed", 0)
		} else {
			writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "Internal error occurred: etcdserver: request timed out", 0)
		}
	case faultSlow:
		// The API server stores the write; its answer is held until the
		// writer's request timeout has cut the call.
		out := r.Clone(context.WithoutCancel(r.Context()))
		out.RequestURI = ""
		target, _ := url.Parse(testRest.Host)
		out.URL.Scheme, out.URL.Host, out.Host = target.Scheme, target.Host, target.Host
		resp, err := p.upstream.RoundTrip(out)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
		writeStatus(w, http.StatusGatewayTimeout, metav1.StatusReasonTimeout, "the writer gave up before this answer", 0)
	}
}

// writeStatus answers as the API server does: a metav1.Status in JSON.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string, retryAfter int32) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
	}
	if retryAfter > 0 {
		st.Details = &metav1.StatusDetails{RetryAfterSeconds: retryAfter}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&st)
}

// TestWriter_slowAndFailingAPIServer puts a proxy in front of the API
// server that refuses or delays every RemediationRequest write in turn:
//
//   - 40 incidents opened while writes answer 403 (quota exceeded): each
//     is retried as "forbidden", none is created, none dead-lettered;
//   - then 429 with Retry-After 2s (beyond writer.request_timeout, 1s):
//     retried as "throttled";
//   - the faults stop: every request is created, once;
//   - an update of each incident (count 5) while writes answer 500/503:
//     retried as "server_error";
//   - then slow answers: the API server stores the write, the answer comes
//     after the writer gave up: retried as "timeout";
//   - the faults stop: every message is acked.
//
// Expected: exactly one request per incident with count 5, nothing in the
// DLQ, and stormweir_worker_retries_total shows each reason.
func TestWriter_slowAndFailingAPIServer(t *testing.T) {
	h := prepareWriter(t, func(c *config.Config) { c.Writer.RequestTimeout = time.Second })
	proxy, rc := startFaultProxy(t)
	h.rest = rc
	h.start()
	ns := h.namespace("prod-"+h.id, nil)
	retries := func(reason string) float64 {
		return counterValue(h.p.Metrics.Retries.WithLabelValues(Stage, reason))
	}
	// waitRetried waits until reason was retried n times, moving the fake
	// clock to each status write's due time meanwhile.
	waitRetried := func(reason string, n int) {
		t.Helper()
		require.Eventually(t, func() bool {
			if st := h.coState(); st.pending > 0 && !st.flushing && st.next.After(h.clk.Now()) {
				h.clk.Set(st.next)
			}
			return retries(reason) >= float64(n)
		}, 60*time.Second, 10*time.Millisecond, "%s retried %v times", reason, retries(reason))
	}

	const incidents = 40
	events := make([]incident.Event, incidents)
	for i := range events {
		id := fmt.Sprintf("i%sf%02d", h.id, i)
		events[i] = event(fingerprintOf(id), id, 1, 1, ns, signal.SeverityCritical)
	}

	proxy.set(faultForbidden)
	for _, e := range events {
		h.open(e)
	}
	waitRetried(reasonForbidden, incidents)
	assert.Empty(t, list(t, ns), "nothing is created while the quota refuses")

	proxy.set(faultThrottled)
	waitRetried(reasonThrottled, incidents/2)

	proxy.set(faultNone)
	h.waitWritten(incidents, 60*time.Second)
	require.Len(t, list(t, ns), incidents)

	proxy.set(faultServerError)
	for _, e := range events {
		u := e
		u.Decision, u.Revision, u.Count = incident.DecisionOccurrence, 2, 5
		h.update(u)
	}
	waitRetried(reasonServerError, incidents/2)

	proxy.set(faultSlow)
	waitRetried(reasonTimeout, 4)

	proxy.set(faultNone)
	h.waitWritten(2*incidents, 60*time.Second)

	items := list(t, ns)
	byIncident := map[string]int{}
	for _, rr := range items {
		byIncident[rr.Spec.IncidentID]++
		if assert.NotNil(t, rr.Status.Occurrences, rr.Name) {
			assert.EqualValues(t, 5, rr.Status.Occurrences.Count, rr.Name)
		}
	}
	assert.Len(t, items, incidents, "one request per incident")
	for _, e := range events {
		assert.Equal(t, 1, byIncident[e.IncidentID], "incident %s", e.IncidentID)
	}
	assert.Zero(t, h.result(bus.ResultDLQ), "nothing dead-lettered")
	injected := map[string]int{}
	for _, f := range []string{faultForbidden, faultThrottled, faultServerError, faultSlow} {
		injected[f] = proxy.count(f)
	}
	reasons := map[string]float64{}
	for _, r := range []string{reasonForbidden, reasonThrottled, reasonServerError, reasonTimeout, reasonUnavailable, reasonConflict, bus.ReasonError} {
		reasons[r] = retries(r)
	}
	t.Logf("faults injected %v; retries by reason %v; api answers 403 %v, 429 %v, 500 %v, 503 %v; acked %v",
		injected, reasons,
		counterValue(h.w.m.api.WithLabelValues("POST", "403")),
		counterValue(h.w.m.api.WithLabelValues("POST", "429")),
		counterValue(h.w.m.api.WithLabelValues("PATCH", "500")),
		counterValue(h.w.m.api.WithLabelValues("PATCH", "503")), h.acked())
	assert.Zero(t, reasons[bus.ReasonError], "every failure was classified")
}
