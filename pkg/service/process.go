package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/tracing"
)

// Process is what one stormweir process shares between the stages it
// runs: configuration, logger, metrics registry, health endpoints and the
// bus connection. The four stage binaries run one stage each; the
// all-in-one binary runs all of them on one Process.
type Process struct {
	Config   config.Config
	Log      *slog.Logger
	Registry *prometheus.Registry
	Health   *Health
	// Metrics are the worker loop metrics, shared by the stages.
	Metrics *bus.Metrics
	// Bus is the NATS connection, with streams ensured.
	Bus *bus.Conn
	// Tracer starts the stages' spans; a no-op one (which still carries
	// each message's trace context on) when nil.
	Tracer trace.Tracer
	// pub is the process's one publisher, shared by its stages: one reply
	// subscription and one watcher goroutine however many stages run.
	pub *bus.Publisher
}

// NewProcess connects to the bus, ensures the streams (or, with
// bus.manage_streams off, waits until they exist) and registers the bus
// readiness check. The connection is named <bus.prefix>-<binary>, which
// also starts its inboxes. natsOpts are passed to the connection.
func NewProcess(ctx context.Context, cfg config.Config, log *slog.Logger, binary string, natsOpts ...nats.Option) (*Process, error) {
	reg := NewRegistry()
	// Log lines about a message carry its trace id (tracing.LogHandler).
	log = slog.New(tracing.LogHandler(log.Handler()))
	p := &Process{Config: cfg, Log: log, Registry: reg, Health: NewHealth(reg), Metrics: bus.NewMetrics(reg)}
	p.Health.PProf = cfg.Debug.PProf
	conn, err := bus.Connect(cfg.Bus, cfg.Bus.Prefix+"-"+binary, log, natsOpts...)
	if err != nil {
		return nil, err
	}
	streams := bus.EnsureStreams
	if !cfg.Bus.ManageStreams {
		streams = bus.CheckStreams
	}
	// A bus that is not up yet is waited for, not a reason to exit: in a
	// rollout the stages may start before NATS answers, or before the
	// process that manages the streams has created them.
	for wait := 250 * time.Millisecond; ; wait = min(wait*2, 5*time.Second) {
		err := streams(ctx, conn.JS, cfg.Bus)
		if err == nil {
			break
		}
		// The server answered and refused (limits, bad config), or a
		// stream of an earlier version needs the operator: waiting will
		// not help, so say why and stop.
		var apiErr *jetstream.APIError
		var retErr *bus.RetentionError
		if errors.As(err, &retErr) || errors.As(err, &apiErr) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			conn.Close()
			return nil, err
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			log.Warn("waiting for the streams to be created by the process with bus.manage_streams", "err", err)
		} else {
			log.Warn("waiting for jetstream", "err", err)
		}
		select {
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("waiting for jetstream: %w", err)
		case <-time.After(wait):
		}
	}
	p.Bus = conn
	p.pub = bus.NewPublisher(conn.JS, cfg.Bus.PublishTimeout)
	p.Health.AddCheck("nats", conn.Check)
	return p, nil
}

// Close closes the publisher, then the bus connection; call it after the
// stages stopped.
func (p *Process) Close() {
	p.pub.Close()
	p.Bus.Close()
}

// Publisher returns the process's publisher, shared by its stages.
func (p *Process) Publisher() *bus.Publisher { return p.pub }

// WorkerSpec is what a stage asks of its consumer loop.
type WorkerSpec struct {
	// Consumer names the durable consumer and what it reads.
	Consumer bus.ConsumerSpec
	// Handler is the stage's pure step.
	Handler bus.Handler
	// Concurrency overrides bus.consumer.concurrency when positive.
	Concurrency int
	// Span names the stage's span per message; the stage's name when
	// empty.
	Span string
}

// Worker creates or updates the stage's durable consumer (bus.consumer
// settings) and returns the loop that reads it on the process's
// publisher, metrics and logger, with its readiness registered as
// "<stage>-consumer". Every stage builds its loop here, so each consumer
// is declared the same way and at the same point: when the stage is
// wired, before anything runs.
func (p *Process) Worker(ctx context.Context, spec WorkerSpec) (*bus.Worker, error) {
	stage := spec.Consumer.Stage
	cons, err := bus.EnsureConsumer(ctx, p.Bus.JS, p.Config.Bus, spec.Consumer)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stage, err)
	}
	cc := p.Config.Bus.Consumer
	if spec.Concurrency > 0 {
		cc.Concurrency = spec.Concurrency
	}
	w, err := bus.NewWorker(bus.WorkerOptions{
		Stage:        stage,
		Consumer:     cons,
		Publisher:    p.pub,
		JS:           p.Bus.JS,
		Handler:      spec.Handler,
		Subjects:     bus.NewSubjects(p.Config.Bus.Prefix),
		Config:       cc,
		DrainTimeout: p.Config.Worker.DrainTimeout,
		Metrics:      p.Metrics,
		Log:          p.Log,
		Tracer:       p.Tracer,
		Span:         spec.Span,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stage, err)
	}
	p.Health.AddCheck(stage+"-consumer", func(context.Context) error { return w.Ready() })
	return w, nil
}

// HealthServer returns the worker health/metrics server on
// worker.listen.
func (p *Process) HealthServer() (*Server, error) {
	mux := http.NewServeMux()
	p.Health.Register(mux)
	return NewServer(p.Config.Worker.Listen, mux, p.Config.Worker.DrainTimeout)
}
