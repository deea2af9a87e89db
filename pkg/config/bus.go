package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Bus configures the NATS JetStream connection, streams and consumers.
type Bus struct {
	// URL is the NATS server URL (comma-separated for a cluster).
	URL string `mapstructure:"url" yaml:"url"`
	// Prefix starts every subject and stream name, so several pipelines can
	// share one NATS deployment.
	Prefix string `mapstructure:"prefix" yaml:"prefix"`
	// Auth is how this process proves who it is to NATS.
	Auth BusAuth `mapstructure:"auth" yaml:"auth"`
	// TLS verifies the server with a custom CA and presents a client
	// certificate (mutual TLS).
	TLS BusTLS `mapstructure:"tls" yaml:"tls"`
	// ManageStreams creates or updates the streams at start-up. Stream
	// rights let a user add sources or subject transforms that store
	// messages under any subject, so in a secured account only one user
	// holds them (the writer's, DESIGN §12); the other stages set false
	// and wait until the streams exist.
	ManageStreams bool `mapstructure:"manage_streams" yaml:"manage_streams"`
	// PublishTimeout bounds the wait for JetStream's acknowledgements.
	PublishTimeout time.Duration `mapstructure:"publish_timeout" yaml:"publish_timeout"`

	// Signals holds the signals the deduper has not processed yet
	// (interest retention: a signal leaves once the deduper and the
	// archive have it). When it is full the receiver answers 503.
	Signals Stream `mapstructure:"signals" yaml:"signals"`
	// Incidents holds the hops after the receiver (dedup.*, incidents.*)
	// until their stage and the archive have them.
	Incidents Stream `mapstructure:"incidents" yaml:"incidents"`
	// DLQ holds messages a stage gave up on, with the reason.
	DLQ Stream `mapstructure:"dlq" yaml:"dlq"`
	// Archive keeps a copy of both for review (stormweir replay, explain,
	// what-if), aged out by its own limits.
	Archive Archive `mapstructure:"archive" yaml:"archive"`

	// Consumer is the durable pull consumer every stage uses.
	Consumer Consumer `mapstructure:"consumer" yaml:"consumer"`
}

// BusAuth picks at most one way to authenticate to NATS. Secrets live in
// files (mounted Secrets), never in the configuration itself; the files
// are read when a process connects, not when the configuration loads, so
// binaries that share a configuration need not mount each other's
// secrets. Password and token files are re-read on every reconnect, and
// the NKEY seed and creds files whenever the server asks for a signature,
// so rotating them needs no restart.
type BusAuth struct {
	// User and PasswordFile authenticate as a user of the server's
	// configuration (deploy/nats/accounts.conf).
	User         string `mapstructure:"user" yaml:"user"`
	PasswordFile string `mapstructure:"password_file" yaml:"password_file"`
	// TokenFile holds a token for a server that authorizes by token.
	TokenFile string `mapstructure:"token_file" yaml:"token_file"`
	// CredsFile is a NATS credentials file (user JWT and NKEY seed), for
	// servers in operator (decentralized JWT) mode.
	CredsFile string `mapstructure:"creds_file" yaml:"creds_file"`
	// NKeyFile holds a user NKEY seed ("SU...").
	NKeyFile string `mapstructure:"nkey_file" yaml:"nkey_file"`
}

// BusTLS configures TLS to NATS. Any field set turns TLS on (so does a
// tls:// URL); the files are re-read on every reconnect.
type BusTLS struct {
	// CAFile holds the PEM certificates that may sign the server's
	// certificate; empty trusts the system roots.
	CAFile string `mapstructure:"ca_file" yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and its key, for
	// servers that verify clients.
	CertFile string `mapstructure:"cert_file" yaml:"cert_file"`
	KeyFile  string `mapstructure:"key_file" yaml:"key_file"`
	// ServerName is the name the server's certificate must carry, when
	// it differs from the host in bus.url.
	ServerName string `mapstructure:"server_name" yaml:"server_name"`
}

// Enabled reports whether any TLS setting is made.
func (t BusTLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Archive configures the review streams: copies of the signals and of
// the decisions (with the stages' audit records), kept by age and size
// whatever the stages have processed.
type Archive struct {
	Signals   Stream `mapstructure:"signals" yaml:"signals"`
	Incidents Stream `mapstructure:"incidents" yaml:"incidents"`
}

// Stream configures one JetStream stream. JetStream reserves max_bytes
// of its store for each stream, so the server's store must hold the sum.
type Stream struct {
	// MaxAge ages messages out; 0 keeps them until a size limit. The
	// processing streams (signals, incidents) must keep 0: their
	// messages leave once processed, never before.
	MaxAge time.Duration `mapstructure:"max_age" yaml:"max_age"`
	// MaxBytes and MaxMsgs bound the stream (-1: no bound). A full
	// processing stream refuses new messages (the receiver answers 503,
	// a stage retries its output); a full archive or DLQ drops its
	// oldest.
	MaxBytes        int64         `mapstructure:"max_bytes" yaml:"max_bytes"`
	MaxMsgs         int64         `mapstructure:"max_msgs" yaml:"max_msgs"`
	DuplicateWindow time.Duration `mapstructure:"duplicate_window" yaml:"duplicate_window"`
	Replicas        int           `mapstructure:"replicas" yaml:"replicas"`
	// Storage is file or memory.
	Storage string `mapstructure:"storage" yaml:"storage"`
}

// Consumer configures a stage's durable pull consumer and its worker loop.
type Consumer struct {
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration `mapstructure:"ack_wait" yaml:"ack_wait"`
	// MaxDeliver is the number of deliveries after which a message that
	// still fails goes to the DLQ. -1 (the default) retries for as long as
	// the stream keeps the message: only what can never succeed (an error
	// its stage marked permanent) is dead-lettered, and an outage of any
	// length shows in stormweir_worker_retries_total instead of filling
	// the DLQ.
	MaxDeliver int `mapstructure:"max_deliver" yaml:"max_deliver"`
	// BackOff is the server's redelivery schedule for messages whose ack
	// never came (a crashed or stuck worker); it overrides AckWait. Empty
	// by default: nats-server also times a NakWithDelay redelivery against
	// BackOff, so a schedule here would stretch every retry delay.
	BackOff []time.Duration `mapstructure:"backoff" yaml:"backoff"`
	// RetryDelays are the NakWithDelay delays after a transient failure,
	// by delivery number; the last repeats.
	RetryDelays   []time.Duration `mapstructure:"retry_delays" yaml:"retry_delays"`
	MaxAckPending int             `mapstructure:"max_ack_pending" yaml:"max_ack_pending"`
	// Concurrency is how many messages one process handles at once.
	Concurrency int `mapstructure:"concurrency" yaml:"concurrency"`
	// FetchBatch is the most messages one pull asks for.
	FetchBatch int `mapstructure:"fetch_batch" yaml:"fetch_batch"`
	// FetchMaxWait bounds one pull; short, so a lost pull costs little
	// (a long-lived Consume() was seen stalling for a whole expiry).
	FetchMaxWait time.Duration `mapstructure:"fetch_max_wait" yaml:"fetch_max_wait"`
}

// DefaultBus returns the bus defaults.
func DefaultBus() Bus {
	return Bus{
		URL:            "nats://127.0.0.1:4222",
		Prefix:         "stormweir",
		ManageStreams:  true,
		PublishTimeout: 5 * time.Second,
		Signals:        Stream{MaxBytes: 1 << 30, MaxMsgs: -1, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"},
		Incidents:      Stream{MaxBytes: 1 << 30, MaxMsgs: -1, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"},
		DLQ:            Stream{MaxAge: 14 * 24 * time.Hour, MaxBytes: 1 << 30, MaxMsgs: -1, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"},
		Archive: Archive{
			Signals:   Stream{MaxAge: 7 * 24 * time.Hour, MaxBytes: 8 << 30, MaxMsgs: -1, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"},
			Incidents: Stream{MaxAge: 24 * time.Hour, MaxBytes: 4 << 30, MaxMsgs: -1, DuplicateWindow: 2 * time.Minute, Replicas: 1, Storage: "file"},
		},
		Consumer: Consumer{
			AckWait:       30 * time.Second,
			MaxDeliver:    -1,
			RetryDelays:   []time.Duration{250 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second},
			MaxAckPending: 4096,
			Concurrency:   64,
			FetchBatch:    256,
			FetchMaxWait:  2 * time.Second,
		},
	}
}

// Validate checks the bus section.
func (b Bus) Validate() error {
	var errs []error
	if b.URL == "" {
		errs = append(errs, errors.New("bus.url: required"))
	}
	if !prefixRE.MatchString(b.Prefix) {
		errs = append(errs, fmt.Errorf("bus.prefix: %q must be letters, digits, '_' or '-'", b.Prefix))
	}
	errs = append(errs, b.Auth.validate(b.URL), validateKeyPair("bus.tls", b.TLS.CertFile, b.TLS.KeyFile))
	errs = append(errs, positive("bus.publish_timeout", b.PublishTimeout))
	for name, s := range map[string]Stream{"signals": b.Signals, "incidents": b.Incidents, "dlq": b.DLQ,
		"archive.signals": b.Archive.Signals, "archive.incidents": b.Archive.Incidents} {
		errs = append(errs, s.validate("bus."+name))
	}
	for name, s := range map[string]Stream{"signals": b.Signals, "incidents": b.Incidents} {
		if s.MaxAge != 0 {
			errs = append(errs, fmt.Errorf("bus.%s.max_age: must be 0: the stream holds messages until every stage has processed them, and an age limit would drop unprocessed ones; bus.archive.%s.max_age is how long reviews can look back", name, name))
		}
	}
	errs = append(errs, b.Consumer.validate("bus.consumer"))
	return errors.Join(errs...)
}

func (a BusAuth) validate(urls string) error {
	var errs []error
	var methods []string
	if a.User != "" || a.PasswordFile != "" {
		methods = append(methods, "user")
		if a.User == "" {
			errs = append(errs, errors.New("bus.auth.user: required with bus.auth.password_file"))
		}
		if a.PasswordFile == "" {
			errs = append(errs, errors.New("bus.auth.password_file: required with bus.auth.user"))
		}
	}
	for _, m := range []struct{ key, val string }{{"token_file", a.TokenFile}, {"nkey_file", a.NKeyFile}, {"creds_file", a.CredsFile}} {
		if m.val != "" {
			methods = append(methods, m.key)
		}
	}
	if len(methods) > 1 {
		errs = append(errs, fmt.Errorf("bus.auth: %s are alternatives; set one", strings.Join(methods, " and ")))
	}
	if len(methods) > 0 {
		for u := range strings.SplitSeq(urls, ",") {
			if pu, err := url.Parse(strings.TrimSpace(u)); err == nil && pu.User != nil {
				errs = append(errs, fmt.Errorf("bus.url: carries credentials as well as bus.auth.%s; keep them in bus.auth only", methods[0]))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// validateKeyPair checks that a client certificate comes with its key.
func validateKeyPair(field, cert, key string) error {
	switch {
	case cert != "" && key == "":
		return fmt.Errorf("%s.key_file: required with %s.cert_file", field, field)
	case key != "" && cert == "":
		return fmt.Errorf("%s.cert_file: required with %s.key_file", field, field)
	}
	return nil
}

func (s Stream) validate(field string) error {
	var errs []error
	if s.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("%s.max_age: must not be negative", field))
	}
	if s.DuplicateWindow <= 0 {
		errs = append(errs, fmt.Errorf("%s.duplicate_window: must be positive", field))
	}
	if s.MaxAge > 0 && s.DuplicateWindow > s.MaxAge {
		errs = append(errs, fmt.Errorf("%s.duplicate_window: %s exceeds max_age %s", field, s.DuplicateWindow, s.MaxAge))
	}
	if s.MaxBytes == 0 || s.MaxBytes < -1 {
		errs = append(errs, fmt.Errorf("%s.max_bytes: %d must be positive, or -1 for no bound", field, s.MaxBytes))
	}
	if s.MaxMsgs == 0 || s.MaxMsgs < -1 {
		errs = append(errs, fmt.Errorf("%s.max_msgs: %d must be positive, or -1 for no bound", field, s.MaxMsgs))
	}
	if s.Replicas < 1 || s.Replicas > 5 {
		errs = append(errs, fmt.Errorf("%s.replicas: %d is not within 1..5", field, s.Replicas))
	}
	if s.Storage != "file" && s.Storage != "memory" {
		errs = append(errs, fmt.Errorf("%s.storage: %q is not file or memory", field, s.Storage))
	}
	return errors.Join(errs...)
}

func (c Consumer) validate(field string) error {
	var errs []error
	errs = append(errs, positive(field+".ack_wait", c.AckWait), positive(field+".fetch_max_wait", c.FetchMaxWait))
	if c.MaxDeliver != -1 && c.MaxDeliver < 2 {
		errs = append(errs, fmt.Errorf("%s.max_deliver: %d leaves no retry; use at least 2, or -1 for no limit", field, c.MaxDeliver))
	}
	if c.MaxDeliver != -1 && len(c.BackOff) >= c.MaxDeliver {
		errs = append(errs, fmt.Errorf("%s.backoff: %d steps need max_deliver above %d", field, len(c.BackOff), len(c.BackOff)))
	}
	for i, d := range c.BackOff {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s.backoff[%d]: must be positive", field, i))
		}
	}
	if len(c.RetryDelays) == 0 {
		errs = append(errs, fmt.Errorf("%s.retry_delays: at least one delay is required", field))
	}
	for i, d := range c.RetryDelays {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s.retry_delays[%d]: must be positive", field, i))
		}
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("%s.concurrency: must be at least 1", field))
	}
	if c.FetchBatch < 1 {
		errs = append(errs, fmt.Errorf("%s.fetch_batch: must be at least 1", field))
	}
	if c.MaxAckPending < c.Concurrency {
		errs = append(errs, fmt.Errorf("%s.max_ack_pending: %d is below concurrency %d", field, c.MaxAckPending, c.Concurrency))
	}
	return errors.Join(errs...)
}
