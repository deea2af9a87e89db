package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
)

// Tracing configures OpenTelemetry spans. It is off by default: a process
// exports spans only when Endpoint, or the standard
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// variable, names a collector.
type Tracing struct {
	// Endpoint is the OTLP/HTTP address of a collector, e.g.
	// http://otel-collector:4318. Spans are sent to its /v1/traces unless
	// the URL names a path; https uses TLS.
	Endpoint string `mapstructure:"endpoint" yaml:"endpoint"`
	// SampleRatio is the share of new traces recorded, 0 to 1. A trace
	// that arrives sampled in a traceparent header is always recorded,
	// and every stage follows the receiver's choice, so a trace is kept
	// or dropped whole.
	SampleRatio float64 `mapstructure:"sample_ratio" yaml:"sample_ratio"`
}

// DefaultTracing is off, recording every trace once turned on.
func DefaultTracing() Tracing { return Tracing{SampleRatio: 1} }

// otelEndpointEnv are the standard variables that name an OTLP collector.
var otelEndpointEnv = []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"}

// Enabled reports whether spans are exported: Endpoint is set, or the
// environment names a collector the standard OpenTelemetry way.
func (t Tracing) Enabled() bool {
	if t.Endpoint != "" {
		return true
	}
	for _, k := range otelEndpointEnv {
		if os.Getenv(k) != "" {
			return true
		}
	}
	return false
}

// Validate checks the tracing section.
func (t Tracing) Validate() error {
	var errs []error
	if t.Endpoint != "" {
		u, err := url.Parse(t.Endpoint)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("tracing.endpoint: %q is not a URL: %v", t.Endpoint, err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			errs = append(errs, fmt.Errorf("tracing.endpoint: %q is not an http:// or https:// URL with a host, e.g. http://otel-collector:4318", t.Endpoint))
		}
	}
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("tracing.sample_ratio: %v is not between 0 and 1", t.SampleRatio))
	}
	return errors.Join(errs...)
}
