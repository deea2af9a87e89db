package receiver_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/test/testenv"
)

// A receiver that served a webhook and stopped leaves no goroutine behind
// once its process is closed.
func TestReceiver_runLeavesNoGoroutine(t *testing.T) {
	n := testenv.StartNATS(t)
	cfg := config.Default()
	cfg.Bus.URL = n.URL
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.ShutdownTimeout = 2 * time.Second
	cfg.Receiver.Auth.Tokens = []string{token}
	ignore := goleak.IgnoreCurrent()

	ctx, cancel := context.WithCancel(context.Background())
	p, err := service.NewProcess(ctx, cfg, slog.New(slog.DiscardHandler), "receiver")
	require.NoError(t, err)
	r, err := receiver.New(cfg, p)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// The test's HTTP client keeps no connection once it is done.
	client := &http.Client{Transport: &http.Transport{}}
	req, err := http.NewRequest(http.MethodPost, "http://"+r.Addr()+receiver.PathAlertmanager,
		bytes.NewReader(loadgen.NewWebhook(podAlerts(10)...).JSON()))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)
	client.CloseIdleConnections()

	cancel()
	require.NoError(t, <-done)
	p.Close()
	// The test's nats-server goes too, so that what is left can only be
	// the receiver's.
	n.Stop()
	// nats-server's own wait for an archive's source consumer outlives
	// its shutdown by a few seconds; it is the server's, not the receiver's.
	goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}
