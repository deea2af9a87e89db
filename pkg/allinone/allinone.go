// Package allinone runs every stage of stormweir in one process, on an
// embedded JetStream server: the receiver, deduper, aggregator and writer
// wired by pkg/app exactly as in the distributed deployment, only sharing
// one bus connection, one publisher, one health endpoint and (by default)
// in-memory state. It is
// the quickest way to see stormweir work, and the same code path as
// production from the first byte received to the last byte written.
package allinone

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"k8s.io/client-go/rest"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/reviewui"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/token"
	"github.com/stormweir/stormweir/pkg/writer"
)

// Options adjust a run beyond the configuration.
type Options struct {
	// Out receives the printed CRs of the stdout sink; os.Stdout when nil.
	Out io.Writer
	// Ready, when not nil, is called with the receiver's address once
	// every stage is wired.
	Ready func(receiverAddr string)
	// MetricsReady, when not nil, is called with the address of the
	// worker.listen health and metrics listener before Ready, when there
	// is one.
	MetricsReady func(addr string)
	// ReviewReady, when not nil, is called with the address of the
	// allinone.review_listen review UI before Ready, when there is one.
	ReviewReady func(addr string)
}

// Defaults are the configuration defaults of `stormweir run`: those of
// every binary, except that the receiver listens on 127.0.0.1 only (an
// all-in-one process is for one machine; --listen opens it wider) and the
// health and metrics endpoints stay on the receiver's listener unless
// --metrics-listen (worker.listen) gives them one of their own.
func Defaults() config.Config {
	c := config.Default()
	c.Receiver.Listen = "127.0.0.1:8080"
	c.Worker.Listen = ""
	return c
}

// InProcessURL is bus.url when the embedded NATS server has no listener
// (allinone.nats_listen exposes it): the process's own connection goes
// in-process, and no other client can reach the server.
const InProcessURL = "nats://in-process"

// Effective is the configuration Run really runs with: the embedded bus
// (its address when allinone.nats_listen exposes it, no auth or TLS, the
// streams managed here) and, when no webhook token is configured, the
// token file Run generates in the data dir. --print-config shows it.
func Effective(cfg config.Config) config.Config {
	cfg.Bus.URL = InProcessURL
	if cfg.AllInOne.NATSListen != "" {
		cfg.Bus.URL = "nats://" + cfg.AllInOne.NATSListen
	}
	cfg.Bus.Auth, cfg.Bus.TLS, cfg.Bus.ManageStreams = config.BusAuth{}, config.BusTLS{}, true
	a := &cfg.Receiver.Auth
	if !a.Disabled && len(a.Tokens) == 0 && a.TokenFile == "" {
		a.TokenFile = tokenPath(cfg.AllInOne)
	}
	return cfg
}

// tokenPath is the generated webhook token's file.
func tokenPath(cfg config.AllInOne) string { return filepath.Join(cfg.DataDir, "token") }

// Run starts the embedded JetStream server and every stage, and blocks
// until ctx ends or a stage fails.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if err := os.MkdirAll(cfg.AllInOne.DataDir, 0o755); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	// The embedded server is this process's own, without users or TLS, and
	// this process is its only client: bus.auth and bus.tls describe an
	// external server, and the streams are this process's to manage.
	if cfg.Bus.Auth != (config.BusAuth{}) || cfg.Bus.TLS != (config.BusTLS{}) {
		log.Warn("bus.auth and bus.tls apply to an external NATS server; the embedded one is connected in-process without them")
	}
	cfg = Effective(cfg)
	if err := ensureToken(cfg, log); err != nil {
		return err
	}

	srv, err := startNATS(cfg.AllInOne)
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	if cfg.AllInOne.NATSListen != "" {
		cfg.Bus.URL = srv.ClientURL()
		log.Info("embedded nats listening", "url", cfg.Bus.URL)
	}
	sink, rest, err := chooseSink(ctx, cfg, log)
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, log, "stormweir", app.Options{
		NATS:         []nats.Option{nats.InProcessServer(srv)},
		MemoryStores: cfg.AllInOne.Store == "memory",
		RestConfig:   rest,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	names := []string{app.Receiver, app.Deduper, app.Aggregator}
	if watch(cfg.AllInOne.Watcher, sink) {
		names = append(names, app.Watcher)
	}
	stages, err := a.Build(ctx, names...)
	if err != nil {
		return err
	}
	var out service.Runner
	if sink == app.Writer {
		out, err = a.Writer(ctx)
	} else {
		out, err = NewPrinter(ctx, a.Process, o.Out, a.Clock())
	}
	if err != nil {
		return err
	}
	stages = append(stages, out)
	addr, err := a.HealthAddr()
	if err != nil {
		return err
	}
	attrs := []any{"receiver", addr, "store", cfg.AllInOne.Store, "sink", sink, "data_dir", cfg.AllInOne.DataDir}
	if cfg.Worker.Listen != "" {
		// The receiver's listener serves the metrics too; worker.listen
		// adds one for a scraper that should not reach the webhooks.
		hs, err := a.Process.HealthServer()
		if err != nil {
			return err
		}
		stages = append(stages, hs)
		attrs = append(attrs, "metrics", hs.Addr())
		if o.MetricsReady != nil {
			o.MetricsReady(hs.Addr())
		}
	}
	if cfg.AllInOne.ReviewListen != "" {
		ui, err := reviewServer(cfg, a.Process.Bus.JS, log)
		if err != nil {
			return err
		}
		stages = append(stages, ui)
		attrs = append(attrs, "review", "http://"+ui.Addr()+"/incidents")
		if o.ReviewReady != nil {
			o.ReviewReady(ui.Addr())
		}
	}
	log.Info("stormweir running", attrs...)
	if o.Ready != nil {
		o.Ready(addr)
	}
	return a.Run(ctx, stages...)
}

// reviewServer is the review UI on allinone.review_listen: the pages of
// `stormweir review` over this process's own streams, signed in with the
// receiver's tokens (the generated one by default).
func reviewServer(cfg config.Config, js jetstream.JetStream, log *slog.Logger) (*service.Server, error) {
	var tokens *token.Set
	if !cfg.Receiver.Auth.Disabled {
		if !token.Configured(cfg.Receiver.Auth) {
			return nil, errors.New("allinone.review_listen: the review UI signs people in with the receiver's tokens: set receiver.auth.tokens or token_file")
		}
		var err error
		if tokens, err = token.New(cfg.Receiver.Auth, clock.Real{}); err != nil {
			return nil, fmt.Errorf("allinone.review_listen: %w", err)
		}
	}
	ui, err := reviewui.New(reviewui.Options{JS: js, Config: cfg, Tokens: tokens, Log: log.With("component", "review")})
	if err != nil {
		return nil, err
	}
	srv, err := service.NewServer(cfg.AllInOne.ReviewListen, ui, cfg.Worker.DrainTimeout)
	if err != nil {
		return nil, fmt.Errorf("allinone.review_listen: %w", err)
	}
	return srv, nil
}

// watch reports whether `stormweir run` watches Kubernetes events:
// allinone.watcher on, or auto with a cluster to write to.
func watch(mode, sink string) bool {
	return mode == "on" || mode == "auto" && sink == app.Writer
}

// chooseSink returns app.Writer and its API server configuration for the
// configured (or detected) cluster, or PrinterStage when there is none.
func chooseSink(ctx context.Context, cfg config.Config, log *slog.Logger) (string, *rest.Config, error) {
	mode := cfg.AllInOne.Sink
	if mode == "stdout" {
		return PrinterStage, nil, nil
	}
	rc, err := writer.RestConfig(cfg.Writer)
	if err == nil && mode == "auto" {
		err = reachable(ctx, rc.Host)
	}
	if err != nil {
		if mode == "kubernetes" {
			return "", nil, fmt.Errorf("allinone.sink is kubernetes: %w", err)
		}
		log.Info("no Kubernetes cluster answers, so RemediationRequests are printed here instead of written (allinone.sink)", "reason", err.Error())
		return PrinterStage, nil, nil
	}
	return app.Writer, rc, nil
}

// reachable checks that something listens at the API server's address; a
// kubeconfig naming a cluster that is not running means "no cluster".
func reachable(ctx context.Context, host string) error {
	h := strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	if i := strings.Index(h, "/"); i >= 0 {
		h = h[:i]
	}
	if _, _, err := net.SplitHostPort(h); err != nil {
		h = net.JoinHostPort(h, "443")
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", h)
	if err != nil {
		return fmt.Errorf("api server %s: %w", host, err)
	}
	return c.Close()
}

// startNATS starts the embedded JetStream server with its store under the
// data dir, so accepted signals survive a restart of the process.
func startNATS(cfg config.AllInOne) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "stormweir",
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		DontListen: cfg.NATSListen == "",
	}
	if cfg.NATSListen != "" {
		host, port, err := net.SplitHostPort(cfg.NATSListen)
		if err != nil {
			return nil, fmt.Errorf("allinone.nats_listen: %w", err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("allinone.nats_listen: %w", err)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready within 30s")
	}
	return srv, nil
}

// OpenStore starts an embedded JetStream server on the store of a
// stopped `stormweir run` in dataDir, listening nowhere, so that its
// streams can be reviewed (connect with nats.InProcessServer). It does
// not start the stages. Shut the server down when done. A data directory
// without a store is an error, not an empty pipeline.
func OpenStore(dataDir string) (*server.Server, error) {
	store := filepath.Join(dataDir, "jetstream")
	if fi, err := os.Stat(store); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("no stormweir run data in %s (no %s directory)", dataDir, store)
	}
	srv, err := startNATS(config.AllInOne{DataDir: dataDir})
	if err != nil {
		return nil, fmt.Errorf("opening the streams of %s: %w", dataDir, err)
	}
	return srv, nil
}

// ensureToken creates the generated webhook token file when Effective
// chose it and it does not exist yet: a random token, kept in the data dir
// so it is stable across restarts and easy to read for curl.
func ensureToken(cfg config.Config, log *slog.Logger) error {
	path := tokenPath(cfg.AllInOne)
	if cfg.Receiver.Auth.TokenFile != path {
		return nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		var b [24]byte
		_, _ = rand.Read(b[:])
		if err := os.WriteFile(path, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing webhook token: %w", err)
		}
	}
	log.Info("webhook bearer token", "file", path)
	return nil
}
