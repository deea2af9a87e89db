package receiver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// metricValue is the value of the counter or gauge name with labels in
// reg (0 when it has no such series).
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestReceiver_oversizedAlertIsRejectedAloneSiblingsStored posts, to a
// bus whose max payload is 8 KiB, ten alerts of which one is invalid and
// two carry an annotation too large for one message: the two are
// rejected by their place in the body with the reason, counted and
// recorded for review, and exactly the seven others are stored. The same
// request again is answered the same way (no endless 503), its seven
// signals absorbed as duplicates; a request of oversized alerts only is
// a 400, which Alertmanager does not retry.
func TestReceiver_oversizedAlertIsRejectedAloneSiblingsStored(t *testing.T) {
	const maxPayload = 8 << 10
	n := testenv.StartNATSWith(t, &server.Options{ServerName: "small-payload", MaxPayload: maxPayload})
	h := newHarnessOn(t, n, nil)

	alerts := podAlerts(10)
	delete(alerts[1].Labels, "alertname") // invalid
	for _, i := range []int{4, 8} {
		alerts[i].Annotations["description"] = strings.Repeat("d", maxPayload+1)
	}
	body := loadgen.NewWebhook(alerts...).JSON()
	for attempt := range 2 {
		resp, b := h.post(receiver.PathAlertmanager, body)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, string(b))
		r := decodeResponse(t, b)
		assert.Equal(t, 7, r.Accepted)
		assert.Equal(t, 7*attempt, r.Duplicates, "a retry stores nothing twice")
		require.Len(t, r.Rejected, 3)
		assert.Equal(t, 1, r.Rejected[0].Index)
		for i, idx := range []int{4, 8} {
			rj := r.Rejected[i+1]
			assert.Equal(t, idx, rj.Index)
			assert.Equal(t, "KubePodCrashLooping", rj.Name)
			assert.Contains(t, rj.Reason, "exceeds the bus's max payload of 8192 bytes")
		}
	}

	want := map[string]bool{}
	for _, i := range []int{0, 2, 3, 5, 6, 7, 9} {
		want[alerts[i].Labels["pod"]] = true
	}
	msgs := h.stored()
	require.Len(t, msgs, 7, "exactly the siblings are stored")
	for _, m := range msgs {
		var s signal.Signal
		require.NoError(t, signal.Decode(m.Data, &s))
		assert.True(t, want[s.Target.Name], "unexpected signal of %s", s.Target.Name)
		delete(want, s.Target.Name)
	}
	assert.Empty(t, want)
	assert.EqualValues(t, 4, metricValue(t, h.reg, "stormweir_receiver_rejected_total", "source", "alertmanager", "reason", "over_max_payload"))
	assert.EqualValues(t, 2, metricValue(t, h.reg, "stormweir_receiver_rejected_total", "source", "alertmanager", "reason", "invalid"))
	assert.EqualValues(t, 6, metricValue(t, h.reg, "stormweir_receiver_signals_total", "source", "alertmanager", "result", "rejected"))

	subj := bus.NewSubjects(h.cfg.Bus.Prefix)
	recs := testenv.ReadStream(t, h.conn.JS, subj.StreamName(bus.StreamIncidentsArchive), subj.Audit("receiver"))
	var recorded []int
	for _, m := range recs {
		var a incident.Audit
		require.NoError(t, json.Unmarshal(m.Data, &a))
		recorded = append(recorded, a.Index)
	}
	assert.ElementsMatch(t, []int{1, 4, 8, 1, 4, 8}, recorded, "each refusal recorded for review")

	resp, b := h.post(receiver.PathAlertmanager, loadgen.NewWebhook(alerts[4], alerts[8]).JSON())
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, string(b))
	assert.Contains(t, string(b), "max payload")
	assert.Len(t, h.stored(), 7)
}

// held is a request whose body the receiver is reading: it holds its
// place in receiver.max_inflight_bytes until finish sends the rest.
type held struct {
	w      *io.PipeWriter
	rest   []byte
	status chan int
}

// hold posts body with its Content-Length but sends only its first byte.
func (h *harness) hold(body []byte) *held {
	h.t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+receiver.PathAlertmanager, pr)
	require.NoError(h.t, err)
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	hr := &held{w: pw, rest: body[1:], status: make(chan int, 1)}
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			hr.status <- 0
			return
		}
		_ = resp.Body.Close()
		hr.status <- resp.StatusCode
	}()
	_, err = pw.Write(body[:1])
	require.NoError(h.t, err)
	return hr
}

// finish sends the rest of the body and returns the answer's status.
func (hr *held) finish(t testing.TB) int {
	t.Helper()
	_, err := hr.w.Write(hr.rest)
	require.NoError(t, err)
	require.NoError(t, hr.w.Close())
	return <-hr.status
}

// TestReceiver_inflightBudgetFullAnswers503ThenAccepts holds a request in
// flight, so that a second one does not fit in receiver.max_inflight_bytes
// beside it: the second is answered 503 with Retry-After and nothing of it
// is stored; once the first is answered, the same second request is
// accepted whole.
func TestReceiver_inflightBudgetFullAnswers503ThenAccepts(t *testing.T) {
	first := loadgen.NewWebhook(podAlerts(200)...).JSON()
	second := loadgen.NewWebhook(podAlerts(300)[100:]...).JSON()
	h := newHarness(t, func(c *config.Config) {
		c.Receiver.MaxBodyBytes = int64(max(len(first), len(second)))
		c.Receiver.MaxInflightBytes = int64(len(first)+len(second)) - 1
	})

	hr := h.hold(first)
	require.Eventually(t, func() bool {
		return metricValue(t, h.reg, "stormweir_receiver_inflight_bytes") == float64(len(first))
	}, 10*time.Second, time.Millisecond, "the first request reserves its body's bytes")

	resp, b := h.post(receiver.PathAlertmanager, second)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(b))
	assert.Equal(t, strconv.Itoa(int(h.cfg.Receiver.RetryAfter.Seconds())), resp.Header.Get("Retry-After"))
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	assert.Contains(t, string(b), "receiver.max_inflight_bytes")
	assert.EqualValues(t, 1, metricValue(t, h.reg, "stormweir_receiver_refused_total", "reason", "inflight_limit"))
	assert.Empty(t, h.stored(), "nothing of a refused request is stored")

	require.Equal(t, http.StatusAccepted, hr.finish(t))
	assert.Zero(t, metricValue(t, h.reg, "stormweir_receiver_inflight_bytes"), "an answered request frees its bytes")
	resp, b = h.post(receiver.PathAlertmanager, second)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(b))
	assert.Equal(t, 200, decodeResponse(t, b).Accepted)
	assert.Len(t, h.stored(), 300, "both requests stored, the pods they share once")
}

// TestReceiver_bodyOverMaxBodyBytesIs413 posts a body over
// receiver.max_body_bytes, with and without a declared length: 413 with
// a message naming the limit and what to do, counted by reason, and no
// room taken in the in-flight budget.
func TestReceiver_bodyOverMaxBodyBytesIs413(t *testing.T) {
	big := loadgen.NewWebhook(podAlerts(20)...).JSON()
	h := newHarness(t, func(c *config.Config) { c.Receiver.MaxBodyBytes = 4096 })
	for _, declared := range []bool{true, false} {
		req, err := http.NewRequest(http.MethodPost, h.srv.URL+receiver.PathAlertmanager, strings.NewReader(string(big)))
		require.NoError(t, err)
		if !declared {
			req.ContentLength = -1
			req.Body = io.NopCloser(strings.NewReader(string(big)))
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Retry-After"), "a retry cannot succeed")
		assert.Contains(t, string(b), "body exceeds receiver.max_body_bytes (4096 bytes)")
	}
	assert.EqualValues(t, 2, metricValue(t, h.reg, "stormweir_receiver_refused_total", "reason", "body_too_large"))
	assert.Zero(t, metricValue(t, h.reg, "stormweir_receiver_inflight_bytes"))
	assert.Empty(t, h.stored())
}
