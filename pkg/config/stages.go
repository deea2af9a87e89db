package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Receiver configures the HTTP intake.
type Receiver struct {
	// Listen is the address of the webhook, health and metrics endpoints.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// MaxBodyBytes is the largest request body accepted (413 above it).
	MaxBodyBytes int64 `mapstructure:"max_body_bytes" yaml:"max_body_bytes"`
	// MaxInflightBytes bounds the body bytes of the requests handled at
	// once, and so the receiver's heap: a request's heap grows with its
	// body (DESIGN §1). A request that does not fit is answered 503 with
	// Retry-After. At least MaxBodyBytes, so any allowed request fits alone.
	MaxInflightBytes int64 `mapstructure:"max_inflight_bytes" yaml:"max_inflight_bytes"`
	// RetryAfter is what a 503 tells the sender to wait.
	RetryAfter time.Duration `mapstructure:"retry_after" yaml:"retry_after"`
	// ShutdownTimeout bounds how long in-flight requests may finish.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout" yaml:"shutdown_timeout"`
	// ReadTimeout bounds reading one request.
	ReadTimeout time.Duration `mapstructure:"read_timeout" yaml:"read_timeout"`
	Auth        Auth          `mapstructure:"auth" yaml:"auth"`
}

// Auth configures bearer-token authentication of webhook senders.
type Auth struct {
	// Disabled turns authentication off; it must be said explicitly, and
	// the receiver logs a warning at start.
	Disabled bool `mapstructure:"disabled" yaml:"disabled"`
	// Tokens are accepted bearer tokens.
	Tokens []string `mapstructure:"tokens" yaml:"tokens"`
	// TokenFile holds accepted tokens, one a line; it is re-read when it
	// changes, so tokens rotate without a restart.
	TokenFile string `mapstructure:"token_file" yaml:"token_file"`
	// TokenReview accepts Kubernetes ServiceAccount tokens the API server
	// vouches for, besides the tokens above.
	TokenReview TokenReview `mapstructure:"token_review" yaml:"token_review"`
}

// TokenReview authenticates a sender in the cluster by its projected,
// audience-bound ServiceAccount token: the receiver asks the API server
// (a TokenReview) and, with Authorize, whether the sender may post to the
// endpoint (a SubjectAccessReview). Answers are cached for CacheTTL, and
// reviews are rate-bounded, so a flood of made-up tokens cannot flood the
// API server; when the API server does not answer, the request is refused
// (503, to be retried), never let through.
type TokenReview struct {
	// Enabled turns TokenReview on.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// Kubeconfig reaches the API server; empty means in-cluster or the
	// usual places.
	Kubeconfig string `mapstructure:"kubeconfig" yaml:"kubeconfig"`
	// Audiences are the audiences a token must be bound to (the
	// projected volume's audience); a token for another audience, such
	// as the API server's own, is refused.
	Audiences []string `mapstructure:"audiences" yaml:"audiences"`
	// Authorize also asks whether the sender may create
	// signals.stormweir.io named after the endpoint's source
	// (alertmanager, grafana, kubernetes-event) in Namespace.
	Authorize bool `mapstructure:"authorize" yaml:"authorize"`
	// Namespace is where Authorize looks for the sender's Role
	// bindings; empty asks for a cluster-wide permission.
	Namespace string `mapstructure:"namespace" yaml:"namespace"`
	// CacheTTL is how long an answer (yes or no) is reused; a revoked
	// token is refused at most this long after.
	CacheTTL time.Duration `mapstructure:"cache_ttl" yaml:"cache_ttl"`
	// CacheSize bounds the cached answers.
	CacheSize int `mapstructure:"cache_size" yaml:"cache_size"`
	// ReviewsPerSecond and ReviewBurst bound the reviews sent to the API
	// server; a request beyond them gets 503 and Retry-After.
	ReviewsPerSecond float64 `mapstructure:"reviews_per_second" yaml:"reviews_per_second"`
	ReviewBurst      int     `mapstructure:"review_burst" yaml:"review_burst"`
	// Timeout bounds one review.
	Timeout time.Duration `mapstructure:"timeout" yaml:"timeout"`
}

// DefaultTokenReview returns the TokenReview defaults (off).
func DefaultTokenReview() TokenReview {
	return TokenReview{
		CacheTTL:         10 * time.Second,
		CacheSize:        4096,
		ReviewsPerSecond: 20,
		ReviewBurst:      40,
		Timeout:          2 * time.Second,
	}
}

func (t TokenReview) validate() error {
	if !t.Enabled {
		return nil
	}
	var errs []error
	if len(t.Audiences) == 0 || slices.Contains(t.Audiences, "") {
		errs = append(errs, errors.New("receiver.auth.token_review.audiences: name the audience the senders' tokens are bound to (e.g. stormweir)"))
	}
	errs = append(errs, positive("receiver.auth.token_review.cache_ttl", t.CacheTTL), positive("receiver.auth.token_review.timeout", t.Timeout))
	if t.CacheSize < 1 {
		errs = append(errs, fmt.Errorf("receiver.auth.token_review.cache_size: %d is below 1", t.CacheSize))
	}
	if t.ReviewsPerSecond <= 0 || t.ReviewBurst < 1 {
		errs = append(errs, errors.New("receiver.auth.token_review: reviews_per_second must be above 0 and review_burst at least 1"))
	}
	return errors.Join(errs...)
}

// DefaultReceiver returns the receiver defaults.
func DefaultReceiver() Receiver {
	return Receiver{
		Listen:           ":8080",
		MaxBodyBytes:     4 << 20,
		MaxInflightBytes: 4 << 20,
		RetryAfter:       5 * time.Second,
		ShutdownTimeout:  15 * time.Second,
		ReadTimeout:      30 * time.Second,
		Auth:             Auth{TokenReview: DefaultTokenReview()},
	}
}

// ErrNoAuth says the receiver has no way to authenticate senders. It is
// checked when a receiver starts, not at load, so other binaries sharing the
// configuration are not required to carry webhook tokens.
var ErrNoAuth = errors.New("receiver.auth: set tokens, token_file or token_review.enabled, or disabled: true to accept unauthenticated webhooks")

// CheckAuth reports ErrNoAuth when authentication is on with no tokens.
func (r Receiver) CheckAuth() error {
	if !r.Auth.Disabled && len(r.Auth.Tokens) == 0 && r.Auth.TokenFile == "" && !r.Auth.TokenReview.Enabled {
		return ErrNoAuth
	}
	return nil
}

// Validate checks the receiver section.
func (r Receiver) Validate() error {
	var errs []error
	errs = append(errs, validListen("receiver.listen", r.Listen))
	if r.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("receiver.max_body_bytes: %d is below 1024", r.MaxBodyBytes))
	}
	if r.MaxInflightBytes < r.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("receiver.max_inflight_bytes: %d is below receiver.max_body_bytes (%d): a request of the largest allowed size would never be accepted", r.MaxInflightBytes, r.MaxBodyBytes))
	}
	errs = append(errs, positive("receiver.retry_after", r.RetryAfter), positive("receiver.shutdown_timeout", r.ShutdownTimeout), positive("receiver.read_timeout", r.ReadTimeout))
	for i, t := range r.Auth.Tokens {
		if len(t) < 16 {
			errs = append(errs, fmt.Errorf("receiver.auth.tokens[%d]: shorter than 16 characters", i))
		}
	}
	errs = append(errs, r.Auth.TokenReview.validate())
	return errors.Join(errs...)
}

// Dedup configures the deduper.
type Dedup struct {
	// Window is the sliding window in which repeats count as occurrences.
	Window time.Duration `mapstructure:"window" yaml:"window"`
	// ReopenWindow keeps a resolved incident so a new firing reopens it.
	ReopenWindow time.Duration `mapstructure:"reopen_window" yaml:"reopen_window"`
	// SeenTTL is how long a processed message id is remembered, so a
	// redelivery is recognised; it must outlast redelivery.
	SeenTTL time.Duration `mapstructure:"seen_ttl" yaml:"seen_ttl"`
}

// DefaultDedup returns the deduper defaults.
func DefaultDedup() Dedup {
	return Dedup{Window: 5 * time.Minute, ReopenWindow: 10 * time.Minute, SeenTTL: time.Hour}
}

// Validate checks the dedup section.
func (d Dedup) Validate() error {
	return errors.Join(positive("dedup.window", d.Window), positive("dedup.reopen_window", d.ReopenWindow), positive("dedup.seen_ttl", d.SeenTTL))
}

// Aggregator configures storm detection.
type Aggregator struct {
	// Scope lists what groups incidents into one storm: "alertname"
	// (the signal name), "namespace", or any label name.
	Scope []string `mapstructure:"scope" yaml:"scope"`
	// RateThreshold: more than this many new incidents in one scope within
	// RateWindow is a rate storm.
	RateThreshold int           `mapstructure:"rate_threshold" yaml:"rate_threshold"`
	RateWindow    time.Duration `mapstructure:"rate_window" yaml:"rate_window"`
	// PatternThreshold: more than this many distinct targets with one
	// alertname within PatternWindow is a pattern storm.
	PatternThreshold int           `mapstructure:"pattern_threshold" yaml:"pattern_threshold"`
	PatternWindow    time.Duration `mapstructure:"pattern_window" yaml:"pattern_window"`
	// InactivityTimeout closes a storm with no new member for this long.
	InactivityTimeout time.Duration `mapstructure:"inactivity_timeout" yaml:"inactivity_timeout"`
	// MaxDuration closes a storm this long after detection.
	MaxDuration time.Duration `mapstructure:"max_duration" yaml:"max_duration"`
	// SweepInterval is how often a replica looks for expired storms.
	SweepInterval time.Duration `mapstructure:"sweep_interval" yaml:"sweep_interval"`
}

// DefaultAggregator returns the aggregator defaults.
func DefaultAggregator() Aggregator {
	return Aggregator{
		Scope:             []string{"alertname", "namespace"},
		RateThreshold:     10,
		RateWindow:        60 * time.Second,
		PatternThreshold:  5,
		PatternWindow:     120 * time.Second,
		InactivityTimeout: 60 * time.Second,
		MaxDuration:       10 * time.Minute,
		SweepInterval:     time.Second,
	}
}

// Validate checks the aggregator section.
func (a Aggregator) Validate() error {
	var errs []error
	if len(a.Scope) == 0 {
		errs = append(errs, errors.New("aggregator.scope: at least one field is required"))
	}
	seen := map[string]bool{}
	for i, f := range a.Scope {
		if f == "" || seen[f] {
			errs = append(errs, fmt.Errorf("aggregator.scope[%d]: %q is empty or repeated", i, f))
		}
		seen[f] = true
	}
	if a.RateThreshold < 1 || a.PatternThreshold < 1 {
		errs = append(errs, errors.New("aggregator.rate_threshold and pattern_threshold: must be at least 1"))
	}
	errs = append(errs, positive("aggregator.rate_window", a.RateWindow), positive("aggregator.pattern_window", a.PatternWindow),
		positive("aggregator.inactivity_timeout", a.InactivityTimeout), positive("aggregator.max_duration", a.MaxDuration),
		positive("aggregator.sweep_interval", a.SweepInterval))
	return errors.Join(errs...)
}

// Writer configures the RemediationRequest writer.
type Writer struct {
	// Kubeconfig is a kubeconfig path; empty means in-cluster or the usual
	// places (KUBECONFIG, ~/.kube/config).
	Kubeconfig string  `mapstructure:"kubeconfig" yaml:"kubeconfig"`
	QPS        float32 `mapstructure:"qps" yaml:"qps"`
	Burst      int     `mapstructure:"burst" yaml:"burst"`
	// RequestTimeout bounds one API call (a create, a status write, a
	// live read), client-go's own retries of a 429 or 5xx with
	// Retry-After included, so a hung API server cannot hold a handler
	// for ever: the message is naked and retried instead.
	RequestTimeout time.Duration `mapstructure:"request_timeout" yaml:"request_timeout"`
	// FieldManager owns stormweir's status fields under server-side apply.
	FieldManager string `mapstructure:"field_manager" yaml:"field_manager"`
	// FallbackNamespace receives CRs whose target namespace does not exist.
	FallbackNamespace string `mapstructure:"fallback_namespace" yaml:"fallback_namespace"`
	// CoalesceInterval is how long status updates to one CR are gathered
	// into one patch.
	CoalesceInterval time.Duration `mapstructure:"coalesce_interval" yaml:"coalesce_interval"`
	// CoalesceMaxInterval bounds the spacing of writes to a busy CR: while
	// a CR keeps being written within it, the spacing doubles from
	// coalesce_interval up to this, so a storm or a duplicate flood costs
	// one write per CR per CoalesceMaxInterval. A resolve or a storm's
	// close waits for coalesce_interval only.
	CoalesceMaxInterval time.Duration `mapstructure:"coalesce_max_interval" yaml:"coalesce_max_interval"`
	// TerminalPhases end an incident: the next firing opens a new CR.
	TerminalPhases []string `mapstructure:"terminal_phases" yaml:"terminal_phases"`
	// PreviousRequestTTL is how long the store remembers a fingerprint's
	// latest finished request, which the next request of the fingerprint
	// names in spec.previousRequestRef. The writer does not keep finished
	// requests in memory; this bounds what the store keeps for them.
	PreviousRequestTTL time.Duration `mapstructure:"previous_request_ttl" yaml:"previous_request_ttl"`
	// MaxAnnotationBytes bounds the annotations copied into a CR.
	MaxAnnotationBytes int         `mapstructure:"max_annotation_bytes" yaml:"max_annotation_bytes"`
	Environment        Environment `mapstructure:"environment" yaml:"environment"`
	// Priority maps severity and environment to P0..P3.
	Priority []PriorityRule `mapstructure:"priority" yaml:"priority"`
	// Concurrency overrides bus.consumer.concurrency for the writer (0
	// keeps it). Handlers wait for the coalesced status write that covers
	// their message before it is acked (unless a newer revision of the
	// same incident supersedes it), so many CRs updated at once hold many
	// handlers for up to the write spacing: the writer needs far more
	// slots than CPU-bound stages. Keep it at most
	// bus.consumer.max_ack_pending.
	Concurrency int `mapstructure:"concurrency" yaml:"concurrency"`
}

// Environment configures how a namespace's environment is classified.
type Environment struct {
	// LabelKeys are namespace labels read in order.
	LabelKeys []string `mapstructure:"label_keys" yaml:"label_keys"`
	// OverrideConfigMap is namespace/name of a ConfigMap mapping namespace
	// names to environments; empty disables it.
	OverrideConfigMap string `mapstructure:"override_configmap" yaml:"override_configmap"`
	// Patterns map namespace-name regular expressions to environments,
	// tried in order.
	Patterns []EnvironmentPattern `mapstructure:"patterns" yaml:"patterns"`
}

// EnvironmentPattern is one namespace-name rule.
type EnvironmentPattern struct {
	Match       string `mapstructure:"match" yaml:"match"`
	Environment string `mapstructure:"environment" yaml:"environment"`
}

// PriorityRule assigns a priority; the first rule that matches wins. An
// empty or "*" field matches anything.
type PriorityRule struct {
	Severity    string `mapstructure:"severity" yaml:"severity"`
	Environment string `mapstructure:"environment" yaml:"environment"`
	Priority    string `mapstructure:"priority" yaml:"priority"`
}

// DefaultPriority is DESIGN §5's default matrix.
func DefaultPriority() []PriorityRule {
	return []PriorityRule{
		{Severity: "critical", Environment: "production", Priority: "P0"},
		{Severity: "critical", Environment: "staging", Priority: "P1"},
		{Severity: "critical", Environment: "*", Priority: "P2"},
		{Severity: "warning", Environment: "production", Priority: "P1"},
		{Severity: "warning", Environment: "*", Priority: "P2"},
		{Severity: "info", Environment: "*", Priority: "P3"},
		{Severity: "*", Environment: "*", Priority: "P2"},
	}
}

// DefaultWriter returns the writer defaults.
func DefaultWriter() Writer {
	return Writer{
		QPS:                 50,
		Burst:               100,
		RequestTimeout:      10 * time.Second,
		FieldManager:        "stormweir",
		FallbackNamespace:   "stormweir-system",
		CoalesceInterval:    500 * time.Millisecond,
		CoalesceMaxInterval: 10 * time.Second,
		TerminalPhases:      []string{"Completed", "Failed", "Cancelled", "TimedOut"},
		PreviousRequestTTL:  30 * 24 * time.Hour,
		MaxAnnotationBytes:  16 << 10,
		Environment: Environment{
			LabelKeys: []string{"environment"},
			Patterns: []EnvironmentPattern{
				{Match: `^(prod|production)(-.*)?$|-(prod|production)$`, Environment: "production"},
				{Match: `^(stg|stage|staging)(-.*)?$|-(stg|stage|staging)$`, Environment: "staging"},
				{Match: `^(dev|development)(-.*)?$|-(dev|development)$`, Environment: "development"},
			},
		},
		Priority:    DefaultPriority(),
		Concurrency: 1024,
	}
}

var priorityRE = regexp.MustCompile(`^P[0-3]$`)

// Validate checks the writer section.
func (w Writer) Validate() error {
	var errs []error
	if w.QPS <= 0 || w.Burst < 1 {
		errs = append(errs, errors.New("writer.qps and writer.burst: must be positive"))
	}
	if w.FieldManager == "" {
		errs = append(errs, errors.New("writer.field_manager: required"))
	}
	if w.FallbackNamespace == "" {
		errs = append(errs, errors.New("writer.fallback_namespace: required"))
	}
	errs = append(errs, positive("writer.coalesce_interval", w.CoalesceInterval), positive("writer.request_timeout", w.RequestTimeout))
	if w.CoalesceMaxInterval < w.CoalesceInterval {
		errs = append(errs, fmt.Errorf("writer.coalesce_max_interval: %s is below writer.coalesce_interval (%s)", w.CoalesceMaxInterval, w.CoalesceInterval))
	}
	errs = append(errs, positive("writer.previous_request_ttl", w.PreviousRequestTTL))
	if w.Concurrency < 0 {
		errs = append(errs, errors.New("writer.concurrency: must not be negative (0 uses bus.consumer.concurrency)"))
	}
	if ref := w.Environment.OverrideConfigMap; ref != "" {
		if ns, name, ok := strings.Cut(ref, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			errs = append(errs, fmt.Errorf("writer.environment.override_configmap: %q is not namespace/name", ref))
		}
	}
	for i, p := range w.Environment.Patterns {
		if _, err := regexp.Compile(p.Match); err != nil {
			errs = append(errs, fmt.Errorf("writer.environment.patterns[%d].match: %v", i, err))
		}
		if p.Environment == "" {
			errs = append(errs, fmt.Errorf("writer.environment.patterns[%d].environment: required", i))
		}
	}
	if len(w.Priority) == 0 {
		errs = append(errs, errors.New("writer.priority: at least one rule is required"))
	}
	for i, r := range w.Priority {
		if !priorityRE.MatchString(r.Priority) {
			errs = append(errs, fmt.Errorf("writer.priority[%d].priority: %q is not P0..P3", i, r.Priority))
		}
	}
	return errors.Join(errs...)
}
