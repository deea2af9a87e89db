package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// run runs stages as their binary does until the test ends.
func run(t *testing.T, cfg config.Config, stages ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, slog.New(slog.DiscardHandler), "app-test", app.Options{}, stages...) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "a stopped process returns nil")
		case <-time.After(30 * time.Second):
			t.Error("the process did not stop within 30s")
		}
	})
}

func freeAddr(t *testing.T) string { return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) }

func readyz(t *testing.T, addr string) func() bool {
	return func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

func TestRun_workerStagesServeHealthOnWorkerListen(t *testing.T) {
	r := testenv.LocalRedis(t)
	cfg := testenv.Config(testenv.StartNATS(t).URL)
	cfg.Redis.KeyPrefix = r.Prefix
	cfg.Worker.Listen = freeAddr(t)
	run(t, cfg, app.Deduper, app.Aggregator)
	require.Eventually(t, readyz(t, cfg.Worker.Listen), 20*time.Second, 20*time.Millisecond, "deduper and aggregator ready")
}

func TestRun_receiverServesHealthOnItsOwnListener(t *testing.T) {
	cfg := testenv.Config(testenv.StartNATS(t).URL)
	cfg.Receiver.Auth.Tokens = []string{"app-test-token-0123456789"}
	cfg.Receiver.Listen = freeAddr(t)
	run(t, cfg, app.Receiver)
	require.Eventually(t, readyz(t, cfg.Receiver.Listen), 20*time.Second, 20*time.Millisecond, "receiver ready")
}

func TestRun_unreadableKubeconfigFailsBeforeWaitingForTheBus(t *testing.T) {
	cfg := config.Default()
	cfg.Bus.URL = "nats://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) // nothing listens
	cfg.Writer.Kubeconfig = t.TempDir() + "/missing"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := app.Run(ctx, cfg, slog.New(slog.DiscardHandler), "app-test", app.Options{}, app.Writer)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "loading kubeconfig")
	assert.NoError(t, ctx.Err(), "it did not wait for the bus")
}

func TestRun_receiverWatchingEventsWithAnUnreadableKubeconfigFailsAtOnce(t *testing.T) {
	cfg := config.Default()
	cfg.Bus.URL = "nats://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) // nothing listens
	cfg.Receiver.Auth.Tokens = []string{"app-test-token-0123456789"}
	cfg.Watcher.Enabled = true
	cfg.Watcher.Kubeconfig = t.TempDir() + "/missing"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := app.Run(ctx, cfg, slog.New(slog.DiscardHandler), "app-test", app.Options{}, app.Receiver)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "watcher: loading kubeconfig")
	assert.NoError(t, ctx.Err(), "it did not wait for the bus")
}

func TestBuild_unknownStageIsAnError(t *testing.T) {
	cfg := testenv.Config(testenv.StartNATS(t).URL)
	a, err := app.New(context.Background(), cfg, slog.New(slog.DiscardHandler), "app-test", app.Options{MemoryStores: true})
	require.NoError(t, err)
	t.Cleanup(a.Close)
	_, err = a.Build(context.Background(), app.Deduper, "dedupe")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown stage "dedupe"`)
	first, err := a.Incidents()
	require.NoError(t, err)
	again, err := a.Incidents()
	require.NoError(t, err)
	assert.Same(t, first, again, "one incident store per process, shared by its stages")
}
