// Package signal defines stormweir's normalized signal, the one shape every
// source (Alertmanager and Grafana webhooks, Kubernetes events) is decoded into before it
// is published on the bus, and the fingerprint and idempotency key that
// identify it end to end.
package signal

import (
	"time"
)

// Source names where a signal came from.
type Source string

// Known sources.
const (
	SourceAlertmanager    Source = "alertmanager"
	SourceKubernetesEvent Source = "kubernetes-event"
	// SourceGrafana is Grafana-managed alerting's webhook contact point.
	SourceGrafana Source = "grafana"
)

// Status is the firing state a signal reports.
type Status string

// Signal states.
const (
	StatusFiring   Status = "firing"
	StatusResolved Status = "resolved"
)

// Severity is the normalized severity of a signal. Unknown source values map
// to SeverityWarning; the original value stays in the labels.
type Severity string

// Normalized severities.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// ParseSeverity maps a source severity to a normalized one. It reports false
// when the value was not one of the known spellings, so callers can count it.
func ParseSeverity(s string) (Severity, bool) {
	switch s {
	case "critical", "Critical", "CRITICAL", "page", "error", "Error":
		return SeverityCritical, true
	case "warning", "Warning", "WARNING", "warn":
		return SeverityWarning, true
	case "info", "Info", "INFO", "informational", "none":
		return SeverityInfo, true
	}
	return SeverityWarning, false
}

// Target is the Kubernetes resource a signal is about. Kind and Name are
// empty when no well-known label names one; Namespace is empty for
// cluster-scoped resources.
type Target struct {
	Kind      string `json:"kind,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// IsZero reports whether no resource was identified.
func (t Target) IsZero() bool { return t.Kind == "" && t.Name == "" }

// Signal is one normalized alert or event. It is what the receiver publishes
// on <prefix>.signals.<source> and what every later stage reads.
type Signal struct {
	// ID is the publish idempotency key (Nats-Msg-Id): derived from the
	// source identity of the delivery, so a retried HTTP request yields the
	// same ID and JetStream's duplicate window absorbs it.
	ID string `json:"id"`
	// Fingerprint identifies the incident this signal belongs to (DESIGN §2).
	Fingerprint string   `json:"fingerprint"`
	Source      Source   `json:"source"`
	Name        string   `json:"name"`
	Status      Status   `json:"status"`
	Severity    Severity `json:"severity"`
	Namespace   string   `json:"namespace,omitempty"`
	Target      Target   `json:"target"`

	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`

	StartsAt     time.Time `json:"startsAt"`
	EndsAt       time.Time `json:"endsAt,omitzero"`
	GeneratorURL string    `json:"generatorURL,omitempty"`
	ReceivedAt   time.Time `json:"receivedAt"`

	// Alertmanager delivery context, when the source is Alertmanager.
	GroupKey             string `json:"groupKey,omitempty"`
	AlertmanagerFP       string `json:"alertmanagerFingerprint,omitempty"`
	TruncatedAlerts      int    `json:"truncatedAlerts,omitempty"`
	AlertmanagerExternal string `json:"externalURL,omitempty"`

	// Kubernetes event context, when the source is a Kubernetes event.
	EventCount         int32     `json:"eventCount,omitempty"`
	EventLastTimestamp time.Time `json:"eventLastTimestamp,omitzero"`
	EventUID           string    `json:"eventUID,omitempty"`
}

// Firing reports whether the signal reports an active problem.
func (s *Signal) Firing() bool { return s.Status == StatusFiring }
