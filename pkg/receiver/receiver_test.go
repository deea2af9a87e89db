package receiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

const token = "test-token-0123456789abcdef"

// harness is a receiver handler on a real in-process JetStream and a
// fake clock.
type harness struct {
	t      testing.TB
	clk    *clock.Fake
	nats   *testenv.NATS
	conn   *bus.Conn
	cfg    config.Config
	srv    *httptest.Server
	health *service.Health
	reg    *prometheus.Registry
}

func newHarness(t testing.TB, mutate ...func(*config.Config)) *harness {
	t.Helper()
	return newHarnessWith(t, nil, mutate...)
}

// newHarnessWith is newHarness with options for the receiver beyond its
// clock.
func newHarnessWith(t testing.TB, opts []receiver.Option, mutate ...func(*config.Config)) *harness {
	t.Helper()
	return newHarnessOn(t, testenv.StartNATS(t), opts, mutate...)
}

// newHarnessOn is newHarnessWith on the NATS server n.
func newHarnessOn(t testing.TB, n *testenv.NATS, opts []receiver.Option, mutate ...func(*config.Config)) *harness {
	t.Helper()
	cfg := config.Default()
	cfg.Bus.URL = n.URL
	cfg.Bus.PublishTimeout = 2 * time.Second
	cfg.Receiver.Auth.Tokens = []string{token}
	for _, m := range mutate {
		m(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Connect(cfg.Bus, "receiver-test", log)
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(context.Background(), conn.JS, cfg.Bus))
	reg := prometheus.NewRegistry()
	health := service.NewHealth(reg)
	health.AddCheck("nats", conn.Check)
	clk := clock.NewFake(time.Date(2026, 11, 1, 9, 0, 30, 0, time.UTC))
	r, err := receiver.NewHandler(cfg, bus.NewPublisher(conn.JS, cfg.Bus.PublishTimeout), health, reg, log, append([]receiver.Option{receiver.WithClock(clk)}, opts...)...)
	require.NoError(t, err)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &harness{t: t, clk: clk, nats: n, conn: conn, cfg: cfg, srv: srv, health: health, reg: reg}
}

func (h *harness) post(path string, body []byte, hdr ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, bytes.NewReader(body))
	require.NoError(h.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	return resp, b
}

// stored returns every message on the signals stream.
func (h *harness) stored() []jetstream.RawStreamMsg {
	h.t.Helper()
	ctx := context.Background()
	st, err := h.conn.JS.Stream(ctx, bus.NewSubjects(h.cfg.Bus.Prefix).StreamName(bus.StreamSignals))
	require.NoError(h.t, err)
	info, err := st.Info(ctx)
	require.NoError(h.t, err)
	var out []jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(h.t, err)
		out = append(out, *m)
	}
	return out
}

func podAlerts(n int) []loadgen.Alert {
	start := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	alerts := make([]loadgen.Alert, n)
	for i := range alerts {
		alerts[i] = loadgen.PodAlert("KubePodCrashLooping", "payments", fmt.Sprintf("api-%04d", i), start)
	}
	return alerts
}

func decodeResponse(t testing.TB, b []byte) receiver.Response {
	t.Helper()
	var r receiver.Response
	require.NoError(t, json.Unmarshal(b, &r), string(b))
	return r
}

func TestReceiver_fiveHundredAlertsBecomeFiveHundredSignals(t *testing.T) {
	h := newHarness(t)
	alerts := podAlerts(500)
	resp, body := h.post(receiver.PathAlertmanager, loadgen.NewWebhook(alerts...).JSON())
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	r := decodeResponse(t, body)
	assert.Equal(t, 500, r.Accepted)
	assert.Empty(t, r.Rejected)

	fp := signal.MustFingerprinter(h.cfg.Fingerprint.Labels)
	want := map[string]bool{}
	for _, a := range alerts {
		want[fp.Fingerprint(&signal.Signal{
			Name: a.Labels["alertname"], Namespace: "payments", Labels: a.Labels,
			Target: signal.Target{Kind: "Pod", Name: a.Labels["pod"], Namespace: "payments"},
		})] = true
	}
	require.Len(t, want, 500)
	msgs := h.stored()
	require.Len(t, msgs, 500)
	require.NotEmpty(t, msgs[0].Header.Get(bus.HeaderTraceparent))
	for _, m := range msgs {
		assert.Equal(t, "stormweir.signals.alertmanager", m.Subject)
		var s signal.Signal
		require.NoError(t, signal.Decode(m.Data, &s))
		assert.True(t, want[s.Fingerprint], "unexpected fingerprint %s", s.Fingerprint)
		assert.Equal(t, s.Fingerprint, m.Header.Get(bus.HeaderFingerprint))
		assert.Equal(t, s.ID, m.Header.Get(jetstream.MsgIDHeader))
		assert.Equal(t, msgs[0].Header.Get(bus.HeaderTraceparent), m.Header.Get(bus.HeaderTraceparent), "one trace per request")
		assert.Equal(t, "alertmanager", m.Header.Get(bus.HeaderSource))
		assert.Equal(t, h.clk.Now(), s.ReceivedAt, "received at the receiver's clock")
		assert.Equal(t, s.ReceivedAt.Format(time.RFC3339Nano), m.Header.Get(bus.HeaderReceivedAt))
		delete(want, s.Fingerprint)
	}
	assert.Empty(t, want, "every alert's fingerprint stored once")
}

func TestReceiver_invalidAlertsAreRejectedOneByOne(t *testing.T) {
	h := newHarness(t)
	alerts := podAlerts(10)
	alerts[2].Labels = map[string]string{"namespace": "payments"} // no alertname
	alerts[5].Status = "exploded"
	alerts[7].Labels["alertname"] = strings.Repeat("x", 300)
	resp, body := h.post(receiver.PathAlertmanager, loadgen.NewWebhook(alerts...).JSON())
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	r := decodeResponse(t, body)
	assert.Equal(t, 7, r.Accepted)
	require.Len(t, r.Rejected, 3)
	var idx []int
	for _, rej := range r.Rejected {
		idx = append(idx, rej.Index)
		assert.NotEmpty(t, rej.Reason)
	}
	assert.Equal(t, []int{2, 5, 7}, idx)
	assert.Len(t, h.stored(), 7)

	// Each refused item is recorded for review with the reason answered,
	// at the receipt time.
	subj := bus.NewSubjects(h.cfg.Bus.Prefix)
	recs := testenv.ReadStream(t, h.conn.JS, subj.StreamName(bus.StreamIncidentsArchive), subj.Audit("receiver"))
	require.Len(t, recs, 3)
	for i, m := range recs {
		var a incident.Audit
		require.NoError(t, json.Unmarshal(m.Data, &a))
		assert.Equal(t, incident.Audit{Kind: incident.AuditRejected, Time: h.clk.Now(), Source: "alertmanager",
			Index: r.Rejected[i].Index, Name: r.Rejected[i].Name, Reason: r.Rejected[i].Reason}, a)
	}
}

func TestReceiver_samePayloadTwiceIsStoredOnce(t *testing.T) {
	h := newHarness(t)
	payload := loadgen.NewWebhook(podAlerts(20)...).JSON()
	resp, body := h.post(receiver.PathAlertmanager, payload)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	resp, body = h.post(receiver.PathAlertmanager, payload)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	r := decodeResponse(t, body)
	assert.Equal(t, 20, r.Accepted)
	assert.Equal(t, 20, r.Duplicates, "the retry is recognised by msg-id")
	assert.Len(t, h.stored(), 20)
}

func TestReceiver_natsDownAnswers503ThenRetrySucceedsWithoutDuplicates(t *testing.T) {
	h := newHarness(t)
	first := loadgen.NewWebhook(podAlerts(5)...).JSON()
	resp, body := h.post(receiver.PathAlertmanager, first)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))

	h.nats.Stop()
	payload := loadgen.NewWebhook(podAlerts(30)...).JSON() // overlaps the first 5
	resp, body = h.post(receiver.PathAlertmanager, payload)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	ready, err := http.Get(h.srv.URL + "/readyz")
	require.NoError(t, err)
	ready.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, ready.StatusCode, "not ready while JetStream is away")

	h.nats.Restart()
	require.Eventually(t, func() bool { return h.conn.Check(context.Background()) == nil }, 15*time.Second, 50*time.Millisecond)
	resp, body = h.post(receiver.PathAlertmanager, payload)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	assert.Equal(t, 5, decodeResponse(t, body).Duplicates)
	assert.Len(t, h.stored(), 30, "every alert once, none twice")
}

func TestReceiver_kubernetesEvents(t *testing.T) {
	h := newHarness(t)
	warning, err := os.ReadFile("../signal/testdata/k8s_event_warning_backoff.json")
	require.NoError(t, err)
	normal, err := os.ReadFile("../signal/testdata/k8s_event_normal.json")
	require.NoError(t, err)

	resp, body := h.post(receiver.PathKubernetesEvent, warning)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	assert.Equal(t, 1, decodeResponse(t, body).Accepted)
	resp, body = h.post(receiver.PathKubernetesEvent, normal)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	r := decodeResponse(t, body)
	assert.Equal(t, 0, r.Accepted)
	assert.Equal(t, 1, r.Ignored)
	msgs := h.stored()
	require.Len(t, msgs, 1)
	assert.Equal(t, "stormweir.signals.kubernetes-event", msgs[0].Subject)
}

// TestReceiver_kubernetesEventExporterBodies posts what
// kubernetes-event-exporter v1.6.1 posted in a real run: its default body
// and two layouts.
func TestReceiver_kubernetesEventExporterBodies(t *testing.T) {
	h := newHarness(t)
	dir := "../signal/testdata/kubernetes-event-exporter-v1.6.1"
	tests := []struct {
		file              string
		accepted, ignored int
	}{
		{"default-warning-backoff.json", 1, 0},
		{"default-warning-failedscheduling.json", 1, 0},
		{"default-warning-unhealthy.json", 1, 0},
		{"default-normal-pulled.json", 0, 1},
		{"default-normal-scheduled.json", 0, 1},
		{"layout-naive-warning-backoff.json", 1, 0},
		{"layout-rfc3339-warning-backoff.json", 1, 0},
	}
	for _, tt := range tests {
		body, err := os.ReadFile(filepath.Join(dir, tt.file))
		require.NoError(t, err)
		resp, got := h.post(receiver.PathKubernetesEvent, body)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s: %s", tt.file, got)
		r := decodeResponse(t, got)
		assert.Equal(t, tt.accepted, r.Accepted, tt.file)
		assert.Equal(t, tt.ignored, r.Ignored, tt.file)
		assert.Empty(t, r.Rejected, tt.file)
	}
	msgs := h.stored()
	require.Len(t, msgs, 5)
	for _, m := range msgs {
		var s signal.Signal
		require.NoError(t, signal.Decode(m.Data, &s))
		assert.Equal(t, "evx-envtest", s.Labels["cluster"], "the exporter's cluster travels with %s", s.Name)
	}
}

func TestReceiver_grafanaAlerts(t *testing.T) {
	h := newHarness(t)
	for _, tt := range []struct {
		file              string
		accepted, ignored int
	}{
		{"grafana_documented.json", 2, 0},
		{"grafana_kubernetes.json", 3, 0},
		{"grafana_test_notification.json", 0, 1},
	} {
		body, err := os.ReadFile(filepath.Join("../signal/testdata", tt.file))
		require.NoError(t, err)
		resp, got := h.post(receiver.PathGrafana, body)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s: %s", tt.file, got)
		r := decodeResponse(t, got)
		assert.Equal(t, tt.accepted, r.Accepted, tt.file)
		assert.Equal(t, tt.ignored, r.Ignored, tt.file)
		assert.Empty(t, r.Rejected, tt.file)
	}
	msgs := h.stored()
	require.Len(t, msgs, 5)
	for _, m := range msgs {
		assert.Equal(t, "stormweir.signals.grafana", m.Subject)
		assert.Equal(t, "grafana", m.Header.Get(bus.HeaderSource))
	}

	resp, body := h.post(receiver.PathGrafana, []byte(`{"version":"4","alerts":[]}`))
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "Alertmanager's payload on Grafana's path: %s", body)
	assert.Contains(t, string(body), `grafana webhook version \"4\"`)
}

func TestReceiver_statusCodes(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Receiver.MaxBodyBytes = 4096 })
	valid := loadgen.NewWebhook(podAlerts(1)...).JSON()
	big := loadgen.NewWebhook(podAlerts(20)...).JSON()
	require.Greater(t, len(big), 4096)

	cases := []struct {
		name string
		path string
		body []byte
		hdr  []string
		want int
	}{
		{"valid", receiver.PathAlertmanager, valid, nil, http.StatusAccepted},
		{"prometheus alias", receiver.PathPrometheus, valid, nil, http.StatusAccepted},
		{"missing token", receiver.PathAlertmanager, valid, []string{"Authorization", ""}, http.StatusUnauthorized},
		{"wrong token", receiver.PathAlertmanager, valid, []string{"Authorization", "Bearer nope-nope-nope-nope"}, http.StatusUnauthorized},
		{"scheme in lower case", receiver.PathAlertmanager, valid, []string{"Authorization", "bearer " + token}, http.StatusAccepted},
		{"scheme in upper case, two spaces", receiver.PathAlertmanager, valid, []string{"Authorization", "BEARER  " + token}, http.StatusAccepted},
		{"another scheme", receiver.PathAlertmanager, valid, []string{"Authorization", "Basic " + token}, http.StatusUnauthorized},
		{"scheme without token", receiver.PathAlertmanager, valid, []string{"Authorization", "Bearer "}, http.StatusUnauthorized},
		{"token without scheme", receiver.PathAlertmanager, valid, []string{"Authorization", token}, http.StatusUnauthorized},
		{"not json", receiver.PathAlertmanager, []byte("alertname=x"), []string{"Content-Type", "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"json with charset", receiver.PathAlertmanager, valid, []string{"Content-Type", "application/json; charset=utf-8"}, http.StatusAccepted},
		{"too large", receiver.PathAlertmanager, big, nil, http.StatusRequestEntityTooLarge},
		{"garbage", receiver.PathAlertmanager, []byte("{not json"), nil, http.StatusBadRequest},
		{"nothing valid", receiver.PathAlertmanager, []byte(`{"version":"4","alerts":[{"status":"firing","labels":{}}]}`), nil, http.StatusBadRequest},
		{"wrong version", receiver.PathAlertmanager, []byte(`{"version":"3","alerts":[]}`), nil, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := h.post(tc.path, tc.body, tc.hdr...)
			assert.Equal(t, tc.want, resp.StatusCode, string(body))
			if tc.want >= 400 {
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			}
		})
	}

	t.Run("chunked body over the limit", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodPost, h.srv.URL+receiver.PathAlertmanager, io.MultiReader(bytes.NewReader(big)))
		require.NoError(t, err)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	})
	t.Run("GET is not allowed", func(t *testing.T) {
		resp, err := http.Get(h.srv.URL + receiver.PathAlertmanager)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		assert.Equal(t, http.MethodPost, resp.Header.Get("Allow"))
	})
	t.Run("health and metrics", func(t *testing.T) {
		for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
			resp, err := http.Get(h.srv.URL + path)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, want, resp.StatusCode, path)
			if path == "/metrics" {
				assert.Contains(t, string(b), `stormweir_receiver_requests_total{code="202",endpoint="alertmanager"}`)
				assert.Contains(t, string(b), `stormweir_receiver_signals_total{result="rejected",source="alertmanager"}`)
			}
		}
	})
	t.Run("draining is not ready", func(t *testing.T) {
		h.health.SetDraining()
		resp, err := http.Get(h.srv.URL + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	})
}

func TestReceiver_tokenFileIsReread(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(file, []byte("# senders\nfirst-token-aaaaaaaaaaaa\n"), 0o600))
	h := newHarness(t, func(c *config.Config) {
		c.Receiver.Auth.Tokens = nil
		c.Receiver.Auth.TokenFile = file
	})
	valid := loadgen.NewWebhook(podAlerts(1)...).JSON()
	resp, _ := h.post(receiver.PathAlertmanager, valid, "Authorization", "Bearer first-token-aaaaaaaaaaaa")
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)

	require.NoError(t, os.WriteFile(file, []byte("second-token-bbbbbbbbbbbbbbbb\n"), 0o600))
	future := time.Now().Add(2 * time.Second)
	require.NoError(t, os.Chtimes(file, future, future))
	resp, _ = h.post(receiver.PathAlertmanager, valid, "Authorization", "Bearer second-token-bbbbbbbbbbbbbbbb")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the file is looked at once a second only")

	h.clk.Advance(time.Second)
	resp, _ = h.post(receiver.PathAlertmanager, valid, "Authorization", "Bearer second-token-bbbbbbbbbbbbbbbb")
	assert.Equal(t, http.StatusAccepted, resp.StatusCode, "a second later the rotated token is accepted")
	resp, _ = h.post(receiver.PathAlertmanager, valid, "Authorization", "Bearer first-token-aaaaaaaaaaaa")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the removed token is refused")
}

func TestReceiver_authMustBeConfigured(t *testing.T) {
	cfg := config.Default()
	_, err := receiver.NewHandler(cfg, nil, service.NewHealth(prometheus.NewRegistry()), prometheus.NewRegistry(), slog.Default())
	require.ErrorIs(t, err, config.ErrNoAuth)

	cfg.Receiver.Auth.Disabled = true
	var logs bytes.Buffer
	_, err = receiver.NewHandler(cfg, nil, service.NewHealth(prometheus.NewRegistry()), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	assert.Contains(t, logs.String(), "authentication is disabled")
}
