// Package tracing is stormweir's OpenTelemetry plumbing: the tracer
// provider of a process (OTLP/HTTP export when the tracing section turns
// it on, a no-op otherwise), the W3C trace context carried in bus message
// headers, and the trace id in log lines. The stages never see it: the
// receiver starts the "receive" span of a request, and the bus worker
// starts each consuming stage's span from the traceparent header of the
// message, so one alert's spans across the stages share one trace.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/version"
)

// Name is the instrumentation scope of stormweir's spans.
const Name = "github.com/stormweir/stormweir"

// Header is the W3C trace context header, on HTTP requests and on bus
// messages alike.
const Header = "traceparent"

// Provider is one process's tracer provider and what must be flushed
// and closed when the process ends.
type Provider struct {
	trace.TracerProvider
	shutdown func(context.Context) error
}

// New returns the provider the tracing section asks for: a no-op one when
// tracing is off, else one that batches spans to the OTLP/HTTP collector
// of cfg.Endpoint (or of the OTEL_EXPORTER_OTLP_* variables), sampling
// new traces at cfg.SampleRatio. service names the process in the spans'
// resource. The batcher's goroutine runs until Shutdown.
func New(cfg config.Tracing, service string) (*Provider, error) {
	if !cfg.Enabled() {
		return Noop(), nil
	}
	// The exporter's own transport would keep idle connections (and their
	// goroutines) after Shutdown; this one is closed with the provider.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	opts := []otlptracehttp.Option{otlptracehttp.WithHTTPClient(&http.Client{Transport: transport})}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("tracing.endpoint: %w", err)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: building the OTLP exporter: %w", err)
	}
	return NewSDK(sdktrace.NewBatchSpanProcessor(exp), cfg.SampleRatio, service, transport.CloseIdleConnections), nil
}

// NewSDK returns a recording provider that hands finished spans to sp
// (tests pass a synchronous processor over tracetest's in-memory
// exporter), sampling new traces at ratio and following the sampled flag
// of a remote parent. closers run after the processor shut down.
func NewSDK(sp sdktrace.SpanProcessor, ratio float64, service string, closers ...func()) *Provider {
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(service),
		semconv.ServiceVersion(version.Get().Version),
		attribute.String("service.namespace", "stormweir"),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(sp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	return &Provider{TracerProvider: tp, shutdown: func(ctx context.Context) error {
		err := tp.Shutdown(ctx)
		for _, c := range closers {
			c()
		}
		return err
	}}
}

// Noop returns a provider that records nothing. Its spans still carry
// the parent's trace context, so the traceparent of a message travels on
// and its trace id is logged when tracing is off.
func Noop() *Provider {
	return &Provider{TracerProvider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}
}

// Tracer is the process's tracer for stormweir's spans.
func (p *Provider) Tracer() trace.Tracer { return p.TracerProvider.Tracer(Name) }

// Shutdown exports the spans still batched and stops the exporter; ctx
// bounds the wait. Call it once, after the stages stopped.
func (p *Provider) Shutdown(ctx context.Context) error {
	if err := p.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing: flushing spans: %w", err)
	}
	return nil
}

// propagator reads and writes the W3C traceparent (and tracestate).
var propagator = propagation.TraceContext{}

// headerCarrier reads and writes bus message headers by their exact key:
// NATS header keys are case-sensitive, and stormweir writes them in lower
// case, unlike HTTP's canonical form.
type headerCarrier map[string][]string

func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// FromHeader returns ctx with the remote span context of a bus message's
// traceparent header as the parent of the spans started from it. A
// missing or malformed header leaves ctx as it is.
func FromHeader(ctx context.Context, h map[string][]string) context.Context {
	return propagator.Extract(ctx, headerCarrier(h))
}

// FromHTTP is FromHeader for an HTTP request's headers.
func FromHTTP(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Traceparent formats the span context of ctx as a W3C traceparent
// value, "" when ctx carries none.
func Traceparent(ctx context.Context) string {
	h := headerCarrier{}
	propagator.Inject(ctx, h)
	return h.Get(Header)
}

// TraceID is the trace id of ctx's span context in hex, "" when it
// carries none.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}
