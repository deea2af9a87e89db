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
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/config"
)

// The all-in-one process (embedded nats-server, receiver, deduper,
// aggregator and printer), having turned a webhook into a request, leaves
// no goroutine behind once Run returned.
func TestRun_leavesNoGoroutine(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.AllInOne.DataDir = dir
	cfg.AllInOne.Sink = "stdout"
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Worker.DrainTimeout = 2 * time.Second
	cfg.Receiver.ShutdownTimeout = 2 * time.Second
	ignore := goleak.IgnoreCurrent()

	out := &syncBuffer{}
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- allinone.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), allinone.Options{
			Out: out, Ready: func(a string) { addr <- a },
		})
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("run stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready within 30s")
	}
	token, err := os.ReadFile(filepath.Join(dir, "token"))
	require.NoError(t, err)
	body, err := os.ReadFile("../../examples/alertmanager-webhook.json")
	require.NoError(t, err)
	// The test's HTTP client keeps no connection once it is done.
	client := &http.Client{Transport: &http.Transport{}}
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/signals/alertmanager", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "new: state=firing occurrences=1") }, 20*time.Second, 50*time.Millisecond)
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s")
	}
	goleak.VerifyNone(t, ignore)
}
