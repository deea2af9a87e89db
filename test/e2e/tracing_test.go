package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/tracing"
	"github.com/stormweir/stormweir/test/testenv"
)

// lineRecorder keeps every log line of the stages with its attributes.
type lineRecorder struct {
	mu    sync.Mutex
	lines []map[string]string
}

func (r *lineRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *lineRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := map[string]string{"msg": rec.Message}
	rec.Attrs(func(a slog.Attr) bool { line[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	r.lines = append(r.lines, line)
	r.mu.Unlock()
	return nil
}
func (r *lineRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *lineRecorder) WithGroup(string) slog.Handler      { return r }

func (r *lineRecorder) find(msg string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if l["msg"] == msg {
			return l
		}
	}
	return nil
}

// TestTracing_oneAlertIsOneTraceAcrossTheStages runs the four stages as
// four processes, built as their binaries build them, on a real NATS,
// Redis and API server, each exporting spans to an in-memory exporter. One
// alert posted with a traceparent at t=0 becomes, once its request is
// created, four spans of the sender's trace: receive (child of the
// sender's span), dedup decision, storm decision and remediation request
// write, each the child of the one before; the writer's log line for the
// request carries the trace id.
func TestTracing_oneAlertIsOneTraceAcrossTheStages(t *testing.T) {
	api := startAPIServer(t)
	n := testenv.StartNATS(t)
	rd := testenv.LocalRedis(t)
	ns := api.namespace(t, "traced-"+testenv.RandomID(), nil)

	cfg := testenv.Config(n.URL)
	cfg.Redis.Addrs = []string{rd.Addr}
	cfg.Redis.KeyPrefix = rd.Prefix
	cfg.Writer.Kubeconfig = api.Kubeconfig
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	require.NoError(t, cfg.Validate())

	spans := tracetest.NewInMemoryExporter()
	rec := &lineRecorder{}
	log := slog.New(rec)
	ctx, cancel := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	t.Cleanup(func() { cancel(); runs.Wait() })

	stages := map[string]service.Runner{}
	for _, stage := range app.Stages {
		// Each process its own provider, as each binary has; one exporter
		// collects them all.
		tp := tracing.NewSDK(sdktrace.NewSimpleSpanProcessor(spans), 1, stage)
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		a, err := app.New(ctx, cfg, log, stage, app.Options{Tracing: tp})
		require.NoError(t, err, stage)
		t.Cleanup(a.Close)
		built, err := a.Build(ctx, stage)
		require.NoError(t, err, stage)
		stages[stage] = built[0]
	}
	for name, s := range stages {
		runs.Add(1)
		go func() {
			defer runs.Done()
			assert.NoError(t, s.Run(ctx), "%s run", name)
		}()
	}

	// t=0: one alert, sent inside the sender's own trace.
	const sender = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	body := loadgen.NewWebhook(loadgen.PodAlert("KubePodCrashLooping", ns, "api-0", time.Now())).JSON()
	addr := stages[app.Receiver].(*receiver.Receiver).Addr()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+receiver.PathAlertmanager, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", sender)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	// The write span ends after the request is created.
	const write = "remediation request write"
	byName := func() map[string]tracetest.SpanStub {
		got := map[string]tracetest.SpanStub{}
		for _, s := range spans.GetSpans() {
			got[s.Name] = s
		}
		return got
	}
	require.Eventually(t, func() bool { _, ok := byName()[write]; return ok }, 20*time.Second, 20*time.Millisecond,
		"no %q span; spans so far: %v", write, spanNames(spans.GetSpans()))

	got := byName()
	parent, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	require.NoError(t, err)
	senderSpan, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	require.NoError(t, err)
	chain := []struct {
		name string
		kind trace.SpanKind
		svc  string
	}{
		{"receive", trace.SpanKindServer, app.Receiver},
		{"dedup decision", trace.SpanKindConsumer, app.Deduper},
		{"storm decision", trace.SpanKindConsumer, app.Aggregator},
		{write, trace.SpanKindConsumer, app.Writer},
	}
	want := senderSpan
	for _, c := range chain {
		s, ok := got[c.name]
		require.True(t, ok, "no %q span; spans: %v", c.name, spanNames(spans.GetSpans()))
		assert.Equal(t, parent, s.SpanContext.TraceID(), "%s: the sender's trace", c.name)
		assert.Equal(t, want, s.Parent.SpanID(), "%s: child of the stage before", c.name)
		assert.True(t, s.Parent.IsRemote(), "%s: its parent came over the wire", c.name)
		assert.Equal(t, c.kind, s.SpanKind, c.name)
		assert.Contains(t, s.Resource.String(), "service.name="+c.svc, c.name)
		want = s.SpanContext.SpanID()
	}

	line := rec.find("remediation request created")
	require.NotNil(t, line, "the writer logged the request")
	assert.Equal(t, parent.String(), line[tracing.TraceIDKey], "the writer's line carries the trace id")
}

func spanNames(ss tracetest.SpanStubs) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}
