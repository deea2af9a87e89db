// Package config is stormweir's one configuration schema, shared by every
// binary. Each section has defaults that work on a developer machine and a
// Validate method; Load layers a YAML file, STORMWEIR_* environment
// variables and flags over the defaults (DESIGN §6).
package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"
)

// Config is the whole schema. Each binary reads the sections it needs.
type Config struct {
	Log         Log         `mapstructure:"log" yaml:"log"`
	Bus         Bus         `mapstructure:"bus" yaml:"bus"`
	Redis       Redis       `mapstructure:"redis" yaml:"redis"`
	Fingerprint Fingerprint `mapstructure:"fingerprint" yaml:"fingerprint"`
	Receiver    Receiver    `mapstructure:"receiver" yaml:"receiver"`
	Worker      Worker      `mapstructure:"worker" yaml:"worker"`
	Dedup       Dedup       `mapstructure:"dedup" yaml:"dedup"`
	Aggregator  Aggregator  `mapstructure:"aggregator" yaml:"aggregator"`
	Writer      Writer      `mapstructure:"writer" yaml:"writer"`
	Watcher     Watcher     `mapstructure:"watcher" yaml:"watcher"`
	AllInOne    AllInOne    `mapstructure:"allinone" yaml:"allinone"`
	Tracing     Tracing     `mapstructure:"tracing" yaml:"tracing"`
	Debug       Debug       `mapstructure:"debug" yaml:"debug"`
}

// Debug configures diagnostics that are off in normal operation.
type Debug struct {
	// PProf serves net/http/pprof under /debug/pprof/ on every binary's
	// health and metrics listener, for CPU and heap profiles of a running
	// stage.
	PProf bool `mapstructure:"pprof" yaml:"pprof"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Log:         Log{Level: "info", Format: "json"},
		Bus:         DefaultBus(),
		Redis:       DefaultRedis(),
		Fingerprint: Fingerprint{Labels: []string{"cluster", "name", "namespace", "target.kind", "target.name"}},
		Receiver:    DefaultReceiver(),
		Worker:      Worker{Listen: ":9090", DrainTimeout: 15 * time.Second},
		Dedup:       DefaultDedup(),
		Aggregator:  DefaultAggregator(),
		Writer:      DefaultWriter(),
		Watcher:     DefaultWatcher(),
		AllInOne:    AllInOne{DataDir: "data", Store: "memory", Sink: "auto", Watcher: "auto"},
		Tracing:     DefaultTracing(),
	}
}

// Validate checks every section, then the rules that span sections, and
// joins all problems into one error, so an operator fixes a config file in
// one pass. Constructors rely on it and check no configuration of their
// own.
func (c *Config) Validate() error {
	return errors.Join(
		c.validateAcross(),
		c.Log.Validate(),
		c.Bus.Validate(),
		c.Redis.Validate(),
		c.Fingerprint.Validate(),
		c.Receiver.Validate(),
		c.Worker.Validate(),
		c.Dedup.Validate(),
		c.Aggregator.Validate(),
		c.Writer.Validate(),
		c.Watcher.Validate(),
		c.AllInOne.Validate(),
		c.Tracing.Validate(),
	)
}

// validateAcross checks the rules between sections.
func (c *Config) validateAcross() error {
	if n, max := c.Writer.Concurrency, c.Bus.Consumer.MaxAckPending; n > max {
		// The server would never hand the writer more messages than
		// max_ack_pending: the extra handlers would wait for nothing.
		return fmt.Errorf("writer.concurrency: %d exceeds bus.consumer.max_ack_pending %d", n, max)
	}
	return nil
}

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level" yaml:"level"`
	// Format is json or text.
	Format string `mapstructure:"format" yaml:"format"`
}

// Validate checks the log section.
func (l Log) Validate() error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", l.Level))
	}
	switch l.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not json or text", l.Format))
	}
	return errors.Join(errs...)
}

// Fingerprint configures which fields identify an incident.
type Fingerprint struct {
	// Labels are the fingerprint fields in order: "name", "namespace",
	// "target.kind", "target.name", "source", or any label name.
	Labels []string `mapstructure:"labels" yaml:"labels"`
}

// Validate checks the fingerprint section.
func (f Fingerprint) Validate() error {
	if len(f.Labels) == 0 {
		return errors.New("fingerprint.labels: at least one field is required")
	}
	seen := map[string]bool{}
	for _, l := range f.Labels {
		if l == "" || seen[l] {
			return fmt.Errorf("fingerprint.labels: %q is empty or repeated", l)
		}
		seen[l] = true
	}
	return nil
}

// Worker configures what every worker stage (deduper, aggregator, writer)
// shares: its health and metrics listener and its drain budget.
type Worker struct {
	// Listen is the address of /healthz, /readyz and /metrics. A process
	// with a receiver serves them on the receiver's listener as well, so
	// `stormweir run` leaves it empty unless --metrics-listen asks for a
	// listener of its own; a stage without a receiver needs it.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// DrainTimeout bounds how long a stopping stage waits for in-flight
	// messages; the rest are redelivered to another replica.
	DrainTimeout time.Duration `mapstructure:"drain_timeout" yaml:"drain_timeout"`
}

// Validate checks the worker section.
func (w Worker) Validate() error {
	var errs []error
	if w.Listen != "" {
		errs = append(errs, validListen("worker.listen", w.Listen))
	}
	if w.DrainTimeout <= 0 {
		errs = append(errs, errors.New("worker.drain_timeout: must be positive"))
	}
	return errors.Join(errs...)
}

func validListen(field, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q is not host:port: %v", field, addr, err)
	}
	return nil
}

func positive(field string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s: must be positive, got %s", field, d)
	}
	return nil
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// AllInOne configures `stormweir run`, every stage in one process.
type AllInOne struct {
	// DataDir holds the embedded JetStream store (and the generated
	// webhook token when none is configured).
	DataDir string `mapstructure:"data_dir" yaml:"data_dir"`
	// NATSListen, when set, opens the embedded NATS server on this
	// address so tools can inspect and replay the streams; empty keeps it
	// in-process only.
	NATSListen string `mapstructure:"nats_listen" yaml:"nats_listen"`
	// ReviewListen, when set, serves the review UI (the pages of
	// `stormweir review`) on this address, on a listener of its own, with
	// the receiver's tokens for sign-in; empty serves none.
	ReviewListen string `mapstructure:"review_listen" yaml:"review_listen"`
	// Store is memory (state lives and dies with the process) or redis
	// (the redis section is used).
	Store string `mapstructure:"store" yaml:"store"`
	// Sink is kubernetes (write CRs), stdout (print them as YAML), or auto
	// (kubernetes when a cluster answers, stdout otherwise).
	Sink string `mapstructure:"sink" yaml:"sink"`
	// Watcher is on (watch Kubernetes Warning events, configured by the
	// watcher section), off, or auto (on when the sink is kubernetes: a
	// cluster answers).
	Watcher string `mapstructure:"watcher" yaml:"watcher"`
}

// Validate checks the allinone section.
func (a AllInOne) Validate() error {
	var errs []error
	if a.DataDir == "" {
		errs = append(errs, errors.New("allinone.data_dir: required"))
	}
	if a.NATSListen != "" {
		errs = append(errs, validListen("allinone.nats_listen", a.NATSListen))
	}
	if a.ReviewListen != "" {
		errs = append(errs, validListen("allinone.review_listen", a.ReviewListen))
	}
	if a.Store != "memory" && a.Store != "redis" {
		errs = append(errs, fmt.Errorf("allinone.store: %q is not memory or redis", a.Store))
	}
	switch a.Sink {
	case "auto", "kubernetes", "stdout":
	default:
		errs = append(errs, fmt.Errorf("allinone.sink: %q is not auto, kubernetes or stdout", a.Sink))
	}
	switch a.Watcher {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("allinone.watcher: %q is not auto, on or off", a.Watcher))
	}
	return errors.Join(errs...)
}
