package allinone_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/writer"
)

// syncBuffer is a bytes.Buffer safe for the printer and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is an allinone.Run in the background, ready to take webhooks.
type running struct {
	base, token string
	out         *syncBuffer
	// client keeps no connection once the test closes its idle ones.
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

// startRun runs the all-in-one process with the stdout sink in a data dir
// of the test's own, and waits until it is ready.
func startRun(t *testing.T) *running {
	t.Helper()
	return startRunWith(t, func(*config.Config) {})
}

// startRunWith is startRun with the configuration changed by edit.
func startRunWith(t *testing.T, edit func(*config.Config), opts ...func(*allinone.Options)) *running {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.AllInOne.DataDir = dir
	cfg.AllInOne.Sink = "stdout"
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Worker.DrainTimeout = 2 * time.Second
	cfg.Receiver.ShutdownTimeout = 2 * time.Second
	edit(&cfg)

	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: &syncBuffer{}, client: &http.Client{Transport: &http.Transport{}}, cancel: cancel, done: make(chan error, 1)}
	t.Cleanup(cancel)
	addr := make(chan string, 1)
	o := allinone.Options{Out: r.out, Ready: func(a string) { addr <- a }}
	for _, opt := range opts {
		opt(&o)
	}
	go func() {
		r.done <- allinone.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	}()
	select {
	case a := <-addr:
		r.base = "http://" + a
	case err := <-r.done:
		t.Fatalf("run stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready within 30s")
	}
	token, err := os.ReadFile(filepath.Join(dir, "token"))
	require.NoError(t, err, "a token is generated when none is configured")
	r.token = strings.TrimSpace(string(token))
	return r
}

// postExample posts the example Alertmanager webhook and returns the
// status code.
func (r *running) postExample(t *testing.T) int {
	t.Helper()
	body, err := os.ReadFile("../../examples/alertmanager-webhook.json")
	require.NoError(t, err)
	return r.post(t, body)
}

// post posts an Alertmanager webhook body and returns the status code.
func (r *running) post(t *testing.T, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.base+"/api/v1/signals/alertmanager", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitPrinted waits until the printer printed s.
func (r *running) waitPrinted(t *testing.T, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(r.out.String(), s) }, 20*time.Second, 50*time.Millisecond)
}

// stop ends the run and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.client.CloseIdleConnections()
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s")
		return nil
	}
}

func TestRun_postedAlertBecomesOneRequest(t *testing.T) {
	r := startRun(t)
	require.Equal(t, http.StatusAccepted, r.postExample(t))
	r.waitPrinted(t, "kind: RemediationRequest")
	require.Equal(t, http.StatusAccepted, r.postExample(t), "a retried webhook is accepted")

	s := r.out.String()
	// The create carries the incident's status, as the writer's does; the
	// namespace "payments" matches no environment pattern (README,
	// "Environment and priority").
	assert.Contains(t, s, "observedRevision: 1")
	assert.Contains(t, s, "environment: unknown")
	assert.Contains(t, s, "priority: P2")
	assert.Equal(t, 1, strings.Count(s, "kind: RemediationRequest"), s)
	assert.Contains(t, s, "name: KubePodCrashLooping")
	assert.Contains(t, s, "namespace: payments")
	assert.Contains(t, s, "severity: critical")
	assert.NoError(t, r.stop(t))
}

// A signal whose namespace cannot exist is printed in the fallback
// namespace, with its origin kept, exactly as the writer would create it.
func TestRun_printsTheFallbackNamespace(t *testing.T) {
	r := startRun(t)
	body := []byte(`{"version":"4","status":"firing","alerts":[{"status":"firing",
		"labels":{"alertname":"TeamAlert","namespace":"Team_Payments.Prod","severity":"warning"},
		"annotations":{"summary":"team alert"},"startsAt":"2026-11-26T09:21:37Z"}]}`)
	require.Equal(t, http.StatusAccepted, r.post(t, body))
	r.waitPrinted(t, "kind: RemediationRequest")
	s := r.out.String()
	assert.Contains(t, s, "\n  namespace: stormweir-system\nspec:", "metadata.namespace")
	assert.Contains(t, s, "stormweir.io/origin-namespace: Team_Payments.Prod")
	assert.NoError(t, r.stop(t))
}

// --metrics-listen (worker.listen) gives the metrics a listener of their
// own; the receiver's keeps serving them too.
func TestRun_metricsListen(t *testing.T) {
	metrics := make(chan string, 1)
	r := startRunWith(t, func(c *config.Config) { c.Worker.Listen = "127.0.0.1:0" },
		func(o *allinone.Options) { o.MetricsReady = func(a string) { metrics <- a } })
	m := <-metrics
	for _, base := range []string{"http://" + m, r.base} {
		resp, err := r.client.Get(base + "/metrics")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, base)
		assert.Contains(t, string(b), "stormweir_build_info", base)
	}
	assert.NoError(t, r.stop(t))
}

// allinone.review_listen serves the review UI on a listener of its own,
// over the process's own streams, signed in with the generated token.
func TestRun_reviewListen(t *testing.T) {
	review := make(chan string, 1)
	r := startRunWith(t, func(c *config.Config) { c.AllInOne.ReviewListen = "127.0.0.1:0" },
		func(o *allinone.Options) { o.ReviewReady = func(a string) { review <- a } })
	ui := "http://" + <-review
	require.Equal(t, http.StatusAccepted, r.postExample(t))
	r.waitPrinted(t, "kind: RemediationRequest")

	get := func(tok string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, ui+"/incidents", nil)
		require.NoError(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := r.client.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	status, _ := get("")
	assert.Equal(t, http.StatusUnauthorized, status, "the pages need the receiver's token")
	// The review reads the archives, which copy the streams within a
	// second or so of the print.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		status, body := get(r.token)
		assert.Equal(c, http.StatusOK, status)
		assert.Contains(c, body, "KubePodCrashLooping", "the example webhook's incident is listed")
	}, 10*time.Second, 50*time.Millisecond)
	assert.NoError(t, r.stop(t))
}

// With no cluster configured anywhere, the reason says where stormweir
// looked, not client-go's KUBERNETES_MASTER hint.
func TestRestConfig_noClusterInOwnWords(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := writer.RestConfig(config.Default().Writer)
	require.ErrorIs(t, err, writer.ErrNoCluster)
	assert.NotContains(t, err.Error(), "KUBERNETES_MASTER")
}
