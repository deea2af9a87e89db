// Package app builds stormweir's stages from a configuration. It is the
// one place that wires a process (bus connection, publisher, health and
// metrics), the Redis client, the stores, the clock and the Kubernetes
// client into the receiver, deduper, aggregator and writer: the four stage
// binaries, `stormweir run` and the tests that run stages in-process build
// them here, so they all run the same wiring.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"k8s.io/client-go/rest"

	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/eventwatch"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/pkg/tracing"
	"github.com/stormweir/stormweir/pkg/writer"
)

// Stage names: the binaries, and what Build accepts.
const (
	Receiver   = "receiver"
	Deduper    = "deduper"
	Aggregator = "aggregator"
	Writer     = "writer"
	// Watcher is the Kubernetes event watcher, which the receiver
	// process runs when watcher.enabled is set.
	Watcher = "watcher"
)

// Stages lists the stages in pipeline order.
var Stages = []string{Receiver, Deduper, Aggregator, Writer}

// Options are a process's dependencies beyond its configuration. A zero
// field gets the production default, so the binaries pass none and tests
// pass only what they replace.
type Options struct {
	// Clock drives every window, TTL and latency measurement; the wall
	// clock when nil.
	Clock clock.Clock
	// NATS are extra connection options, e.g. nats.InProcessServer for an
	// embedded server.
	NATS []nats.Option
	// Redis is the stores' client. When nil, one is built from the redis
	// section on first use and closed with the App; a given one is the
	// caller's to close.
	Redis redis.UniversalClient
	// MemoryStores keeps incidents and storms in this process's memory
	// instead of Redis (`stormweir run` with allinone.store: memory).
	MemoryStores bool
	// Incidents and Storms replace the stores, e.g. with one that fails
	// on purpose.
	Incidents record.Store
	Storms    storm.Store
	// RestConfig reaches the Kubernetes API server; loaded from
	// writer.kubeconfig (or the usual places) when nil, and for the
	// watcher from watcher.kubeconfig.
	RestConfig *rest.Config
	// Tracing replaces the tracer provider the tracing section asks for,
	// e.g. with one over an in-memory exporter; it is the caller's to shut
	// down.
	Tracing *tracing.Provider
}

// App is one stormweir process: its service.Process and what its stages
// share, each built once and on first use (a receiver-only process never
// creates a Redis client). Build stages from one goroutine; Run them once.
type App struct {
	// Process is the process's bus connection, publisher, health and
	// metrics.
	Process *service.Process

	cfg      config.Config
	o        Options
	ownRedis bool
	// ownTracing: the App built o.Tracing and flushes it on Close.
	ownTracing bool
	receiver   *receiver.Receiver
	health     *service.Server
	built      []string
}

// New connects the process to the bus (waiting for it, see
// service.NewProcess) and ensures the streams; binary names the process
// in logs and in its NATS connection. It builds no stage.
func New(ctx context.Context, cfg config.Config, log *slog.Logger, binary string, o Options) (*App, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	own := o.Tracing == nil
	if own {
		tp, err := tracing.New(cfg.Tracing, cfg.Bus.Prefix+"-"+binary)
		if err != nil {
			return nil, err
		}
		o.Tracing = tp
	}
	p, err := service.NewProcess(ctx, cfg, log, binary, o.NATS...)
	if err != nil {
		if own {
			_ = o.Tracing.Shutdown(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	p.Tracer = o.Tracing.Tracer()
	return &App{Process: p, cfg: cfg, o: o, ownTracing: own}, nil
}

// tracingFlushTimeout bounds how long Close waits for the collector to
// take the spans still batched: a collector that is down must not hold
// up a shutdown.
const tracingFlushTimeout = 5 * time.Second

// Close closes the process (publisher and bus connection), then the Redis
// client if the App built it, then flushes the spans still batched to the
// collector and stops the exporter if the App built it. Call it once every
// stage has stopped.
func (a *App) Close() {
	a.Process.Close()
	if a.ownRedis {
		_ = a.o.Redis.Close()
	}
	if a.ownTracing {
		ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
		defer cancel()
		if err := a.o.Tracing.Shutdown(ctx); err != nil {
			a.Process.Log.Warn("spans not flushed at shutdown", "err", err)
		}
	}
}

// Clock is the time source of every stage of the App.
func (a *App) Clock() clock.Clock { return a.o.Clock }

// redis returns the stores' Redis client, built on first use.
func (a *App) redis() (redis.UniversalClient, error) {
	if a.o.Redis == nil {
		rc, err := redisclient.New(a.cfg.Redis)
		if err != nil {
			return nil, err
		}
		a.o.Redis, a.ownRedis = rc, true
	}
	return a.o.Redis, nil
}

// Incidents is the incident record store the deduper decides in and the
// aggregator and writer read and update: one per process, so in memory
// mode the stages share it.
func (a *App) Incidents() (record.Store, error) {
	if a.o.Incidents == nil {
		if a.o.MemoryStores {
			a.o.Incidents = record.NewMemoryStore(a.cfg.Dedup, a.o.Clock)
		} else {
			rc, err := a.redis()
			if err != nil {
				return nil, err
			}
			a.o.Incidents = record.NewRedisStore(rc, a.cfg.Redis.KeyPrefix, a.cfg.Dedup, a.o.Clock)
		}
	}
	return a.o.Incidents, nil
}

// Storms is the storm window store of the aggregator.
func (a *App) Storms() (storm.Store, error) {
	if a.o.Storms == nil {
		if a.o.MemoryStores {
			a.o.Storms = storm.NewMemoryStore(0)
		} else {
			rc, err := a.redis()
			if err != nil {
				return nil, err
			}
			a.o.Storms = storm.NewRedisStore(rc, a.cfg.Redis.KeyPrefix, 0)
		}
	}
	return a.o.Storms, nil
}

// RestConfig is the Kubernetes API server configuration of the writer,
// loaded on first use.
func (a *App) RestConfig() (*rest.Config, error) {
	if a.o.RestConfig == nil {
		rc, err := writer.RestConfig(a.cfg.Writer)
		if err != nil {
			return nil, err
		}
		a.o.RestConfig = rc
	}
	return a.o.RestConfig, nil
}

// Watcher builds the Kubernetes event watcher, publishing on the
// process's publisher.
func (a *App) Watcher() (*eventwatch.Watcher, error) {
	rc, err := a.watcherRestConfig()
	if err != nil {
		return nil, err
	}
	w, err := eventwatch.New(eventwatch.Options{
		Config: a.cfg, RestConfig: rc, Publisher: a.Process.Publisher(),
		Registry: a.Process.Registry, Log: a.Process.Log, Clock: a.o.Clock,
	})
	if err != nil {
		return nil, err
	}
	a.built = append(a.built, Watcher)
	return w, nil
}

// watcherRestConfig is the watcher's API server configuration:
// watcher.kubeconfig when set, else the process's (Options.RestConfig),
// else the usual places.
func (a *App) watcherRestConfig() (*rest.Config, error) {
	if a.cfg.Watcher.Kubeconfig == "" && a.o.RestConfig != nil {
		return a.o.RestConfig, nil
	}
	rc, err := writer.RestConfig(config.Writer{Kubeconfig: a.cfg.Watcher.Kubeconfig})
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	return rc, nil
}

// Receiver builds the HTTP intake; it binds receiver.listen, which then
// also serves the process's /healthz, /readyz and /metrics.
func (a *App) Receiver() (*receiver.Receiver, error) {
	// The receipt time each signal carries is the App's clock, as every
	// other stage's time: a replay on a fake clock sees one time line.
	opts := []receiver.Option{receiver.WithClock(a.o.Clock)}
	if a.o.RestConfig != nil {
		// The API server given for the writer also reviews tokens.
		opts = append(opts, receiver.WithRestConfig(a.o.RestConfig))
	}
	r, err := receiver.New(a.cfg, a.Process, opts...)
	if err != nil {
		return nil, err
	}
	a.receiver = r
	a.built = append(a.built, Receiver)
	return r, nil
}

// Deduper builds the dedup stage on Incidents.
func (a *App) Deduper(ctx context.Context) (*dedup.Stage, error) {
	incidents, err := a.Incidents()
	if err != nil {
		return nil, err
	}
	s, err := dedup.New(ctx, a.Process, incidents)
	if err != nil {
		return nil, err
	}
	a.built = append(a.built, Deduper)
	return s, nil
}

// Aggregator builds the storm stage on Storms and Incidents.
func (a *App) Aggregator(ctx context.Context) (*storm.Stage, error) {
	storms, err := a.Storms()
	if err != nil {
		return nil, err
	}
	incidents, err := a.Incidents()
	if err != nil {
		return nil, err
	}
	s, err := storm.New(ctx, a.Process, storms, incidents, a.o.Clock)
	if err != nil {
		return nil, err
	}
	a.built = append(a.built, Aggregator)
	return s, nil
}

// Writer builds the writer stage on Incidents and RestConfig.
func (a *App) Writer(ctx context.Context) (*writer.Writer, error) {
	rc, err := a.RestConfig()
	if err != nil {
		return nil, err
	}
	incidents, err := a.Incidents()
	if err != nil {
		return nil, err
	}
	w, err := writer.New(ctx, writer.Options{Process: a.Process, Records: incidents, RestConfig: rc, Clock: a.o.Clock})
	if err != nil {
		return nil, err
	}
	a.built = append(a.built, Writer)
	return w, nil
}

// Build builds the named stages, in the order given.
func (a *App) Build(ctx context.Context, names ...string) ([]service.Runner, error) {
	stages := make([]service.Runner, 0, len(names))
	for _, name := range names {
		var s service.Runner
		var err error
		switch name {
		case Receiver:
			s, err = a.Receiver()
		case Deduper:
			s, err = a.Deduper(ctx)
		case Aggregator:
			s, err = a.Aggregator(ctx)
		case Writer:
			s, err = a.Writer(ctx)
		case Watcher:
			s, err = a.Watcher()
		default:
			err = fmt.Errorf("unknown stage %q (want one of %s)", name, strings.Join(Stages, ", "))
		}
		if err != nil {
			return nil, err
		}
		stages = append(stages, s)
	}
	return stages, nil
}

// HealthAddr is the address of the process's /healthz, /readyz and
// /metrics: the receiver's listener when the App built a receiver, else
// worker.listen, bound on the first call (use ":0" and read it here).
func (a *App) HealthAddr() (string, error) {
	if a.receiver != nil {
		return a.receiver.Addr(), nil
	}
	if a.health == nil {
		if a.cfg.Worker.Listen == "" {
			return "", errors.New("worker.listen: empty, but a process without a receiver serves /healthz, /readyz and /metrics there")
		}
		hs, err := a.Process.HealthServer()
		if err != nil {
			return "", err
		}
		a.health = hs
	}
	return a.health.Addr(), nil
}

// Run runs stages (and, without a receiver, the health and metrics
// server on worker.listen) until ctx ends or one of them fails; the first
// failure stops the rest.
func (a *App) Run(ctx context.Context, stages ...service.Runner) error {
	addr, err := a.HealthAddr()
	if err != nil {
		return err
	}
	if a.health != nil {
		stages = append(stages, a.health)
	}
	a.Process.Log.Info("running", "stages", strings.Join(a.built, ","), "listen", addr)
	return service.RunAll(ctx, stages...)
}

// Run is a whole stage process: it builds the named stages on a new App
// and runs them until ctx ends. A receiver process also watches
// Kubernetes events when watcher.enabled is set.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, binary string, o Options, names ...string) error {
	if cfg.Watcher.Enabled && slices.Contains(names, Receiver) && !slices.Contains(names, Watcher) {
		names = append(slices.Clone(names), Watcher)
	}
	if slices.Contains(names, Writer) && o.RestConfig == nil {
		// A kubeconfig that cannot be read fails at once, before the
		// process waits for a bus that may not be up yet.
		rc, err := writer.RestConfig(cfg.Writer)
		if err != nil {
			return err
		}
		o.RestConfig = rc
	}
	if slices.Contains(names, Watcher) && (cfg.Watcher.Kubeconfig != "" || o.RestConfig == nil) {
		// The same for the watcher's kubeconfig.
		rc, err := writer.RestConfig(config.Writer{Kubeconfig: cfg.Watcher.Kubeconfig})
		if err != nil {
			return fmt.Errorf("watcher: %w", err)
		}
		if cfg.Watcher.Kubeconfig == "" {
			o.RestConfig = rc
		}
	}
	a, err := New(ctx, cfg, log, binary, o)
	if err != nil {
		return err
	}
	defer a.Close()
	stages, err := a.Build(ctx, names...)
	if err != nil {
		return err
	}
	return a.Run(ctx, stages...)
}

// descriptions are the one-line help and the longer help of each stage
// binary.
var descriptions = map[string][2]string{
	Receiver: {"stormweir's HTTP intake: webhooks in, signals on the bus out",
		"Serves the Alertmanager and Kubernetes event webhooks on receiver.listen\n(with /healthz, /readyz and /metrics) and answers 202 once JetStream\nstored every accepted signal."},
	Deduper: {"stormweir's dedup stage: one incident per fingerprint",
		"Consumes signals, keeps one incident per fingerprint in Redis (occurrences,\nresolve, reopen) and publishes incident events; health and metrics on\nworker.listen."},
	Aggregator: {"stormweir's storm stage: alert storms folded into one incident",
		"Consumes new incidents, keeps storm windows in Redis and publishes\nindividual and storm incidents; health and metrics on worker.listen."},
	Writer: {"stormweir's writer: one RemediationRequest per real incident",
		"Consumes incident and storm events and creates or updates one\nRemediationRequest custom resource per incident in the cluster of\nwriter.kubeconfig; health and metrics on worker.listen."},
}

// Main is the whole main of the stage binary called stage: its command
// line (pkg/cli: help, --print-config, version, exit codes), signals, and
// the stage run until SIGINT or SIGTERM.
func Main(stage string) {
	d := descriptions[stage]
	cli.Main(cli.Stage(stage, d[0], d[1], func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		return Run(ctx, cfg, log, stage, Options{}, stage)
	}))
}
