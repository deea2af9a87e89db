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

func TestRun_postedAlertBecomesOneRequest(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.AllInOne.DataDir = dir
	cfg.AllInOne.Sink = "stdout"
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Worker.DrainTimeout = 2 * time.Second
	cfg.Receiver.ShutdownTimeout = 2 * time.Second

	out := &syncBuffer{}
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
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
	require.NoError(t, err, "a token is generated when none is configured")
	body, err := os.ReadFile("../../examples/alertmanager-webhook.json")
	require.NoError(t, err)

	post := func() int {
		req, err := http.NewRequest(http.MethodPost, base+"/api/v1/signals/alertmanager", bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusAccepted, post())
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "new: state=firing occurrences=1") }, 20*time.Second, 50*time.Millisecond)
	require.Equal(t, http.StatusAccepted, post(), "a retried webhook is accepted")

	s := out.String()
	assert.Equal(t, 1, strings.Count(s, "kind: RemediationRequest"), s)
	assert.Contains(t, s, "name: KubePodCrashLooping")
	assert.Contains(t, s, "namespace: payments")
	assert.Contains(t, s, "severity: critical")

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s")
	}
}
