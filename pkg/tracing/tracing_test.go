package tracing_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/tracing"
)

// collector is an OTLP/HTTP trace receiver: it decodes what the exporter
// sends, as a collector would.
type collector struct {
	mu    sync.Mutex
	paths []string
	spans map[string][]byte // name → trace id
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans[s.GetName()] = s.GetTraceId()
			}
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// TestNew_exportsToTheEndpointAndFlushesAtShutdown turns tracing on with
// tracing.endpoint pointing at a collector: a span ended before Shutdown
// reaches the collector's /v1/traces by the time Shutdown returns, in the
// trace of the traceparent it continued, and no goroutine of the exporter
// outlives Shutdown.
func TestNew_exportsToTheEndpointAndFlushesAtShutdown(t *testing.T) {
	col := &collector{spans: map[string][]byte{}}
	srv := httptest.NewServer(col)
	defer srv.Close()
	ignore := goleak.IgnoreCurrent()

	tp, err := tracing.New(config.Tracing{Endpoint: srv.URL, SampleRatio: 1}, "test")
	require.NoError(t, err)
	ctx := tracing.FromHeader(context.Background(), map[string][]string{
		tracing.Header: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	})
	_, span := tp.Tracer().Start(ctx, "receive")
	span.End()
	require.NoError(t, tp.Shutdown(context.Background()))

	col.mu.Lock()
	assert.Equal(t, []string{"/v1/traces"}, col.paths)
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", hex.EncodeToString(col.spans["receive"]))
	col.mu.Unlock()
	srv.CloseClientConnections()
	goleak.VerifyNone(t, ignore)
}

// TestNew_offByDefault: the default section records nothing, yet a span
// started from a message's traceparent carries that trace on.
func TestNew_offByDefault(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	cfg := config.DefaultTracing()
	require.False(t, cfg.Enabled())
	tp, err := tracing.New(cfg, "test")
	require.NoError(t, err)
	const tp0 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, span := tp.Tracer().Start(tracing.FromHeader(context.Background(), map[string][]string{tracing.Header: {tp0}}), "x")
	assert.False(t, span.IsRecording())
	assert.Equal(t, tp0, tracing.Traceparent(ctx))
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", tracing.TraceID(ctx))
	require.NoError(t, tp.Shutdown(context.Background()))
}

// TestTracing_enabledByTheStandardVariable: OTEL_EXPORTER_OTLP_ENDPOINT
// turns tracing on without a tracing.endpoint.
func TestTracing_enabledByTheStandardVariable(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
	assert.True(t, config.DefaultTracing().Enabled())
}

// TestLogHandler_addsTheTraceID: a line logged with a message's context
// carries its trace id; one without a trace carries none.
func TestLogHandler_addsTheTraceID(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewTextHandler(&buf, nil))).With("stage", "deduper")
	ctx := tracing.FromHeader(context.Background(), map[string][]string{
		tracing.Header: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	})
	log.InfoContext(ctx, "decided")
	log.Info("idle")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	assert.Contains(t, lines[0], "trace_id=4bf92f3577b34da6a3ce929d0e0e4736")
	assert.Contains(t, lines[0], "stage=deduper")
	assert.NotContains(t, lines[1], "trace_id")
}
