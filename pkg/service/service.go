// Package service holds what every stormweir process shares around its
// stage: logging set-up, the /healthz, /readyz and /metrics endpoints, and
// running components together so the first failure stops them all.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/version"
)

// NewLogger returns the process logger configured by cfg.
func NewLogger(cfg config.Log, binary string) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if cfg.Format == "text" {
		h = slog.NewTextHandler(os.Stderr, opts)
	} else {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	return slog.New(h).With("binary", binary)
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors and stormweir_build_info, one per process.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	return reg
}

// buildInfo is stormweir_build_info: always 1, with the running build in
// its labels, so a dashboard shows which version each pod runs and a
// rollout shows as a change of labels.
func buildInfo() prometheus.Collector {
	v := version.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "stormweir_build_info",
		Help: "Always 1; the labels name the running build (version, source revision, Go version).",
		ConstLabels: prometheus.Labels{
			"version": v.Version, "revision": v.Revision, "goversion": v.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// Check is one readiness dependency: nil when usable.
type Check func(ctx context.Context) error

// Health serves /healthz (the process is alive), /readyz (every check
// passes and the process is not draining) and /metrics.
type Health struct {
	mu       sync.RWMutex
	checks   map[string]Check
	draining atomic.Bool
	reg      *prometheus.Registry
	// PProf adds net/http/pprof's handlers to Register (debug.pprof).
	PProf bool
}

// NewHealth returns a Health that exposes reg's metrics.
func NewHealth(reg *prometheus.Registry) *Health {
	return &Health{checks: map[string]Check{}, reg: reg}
}

// AddCheck adds a readiness check under name.
func (h *Health) AddCheck(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// SetDraining makes /readyz answer 503 so load balancers stop sending.
func (h *Health) SetDraining() { h.draining.Store(true) }

// Ready runs every check and returns the failures joined.
func (h *Health) Ready(ctx context.Context) error {
	if h.draining.Load() {
		return errors.New("draining")
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	var errs []error
	for name, c := range h.checks {
		if err := c(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Register adds the health and metrics endpoints to mux.
func (h *Health) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain")
		if err := h.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{Registry: h.reg}))
	if h.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// Server is an HTTP server run as a component: it listens when Run starts
// and shuts down gracefully when the context ends.
type Server struct {
	srv      *http.Server
	ln       net.Listener
	shutdown time.Duration
}

// NewServer binds addr now, so a port conflict fails start-up and tests
// can read the bound address (use ":0" for a random port).
func NewServer(addr string, h http.Handler, shutdown time.Duration) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return &Server{
		srv:      &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		ln:       ln,
		shutdown: shutdown,
	}, nil
}

// HTTP returns the underlying server, for timeouts.
func (s *Server) HTTP() *http.Server { return s.srv }

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then lets in-flight requests finish within
// the shutdown budget.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdown)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	<-errc
	return nil
}

// Runner is anything with a blocking Run.
type Runner interface {
	Run(ctx context.Context) error
}

// RunFunc adapts a function to Runner.
type RunFunc func(ctx context.Context) error

// Run calls f.
func (f RunFunc) Run(ctx context.Context) error { return f(ctx) }

// RunAll runs every component until ctx ends or one of them fails; the
// first failure cancels the rest, and RunAll returns it after all stop.
func RunAll(ctx context.Context, rs ...Runner) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range rs {
		g.Go(func() error {
			err := r.Run(gctx)
			if err == nil && ctx.Err() == nil {
				// A component that stops on its own while the process
				// should run is a failure too.
				return fmt.Errorf("%T stopped unexpectedly", r)
			}
			return err
		})
	}
	return g.Wait()
}
