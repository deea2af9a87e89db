package incident

import "time"

// AuditKind names a decision a stage records for review.
type AuditKind string

// Audit kinds.
const (
	// AuditRouted: the aggregator folded a new incident into a storm (an
	// individual route shows as the incident's open event instead).
	AuditRouted AuditKind = "routed"
	// AuditWritten: the writer created or updated a RemediationRequest.
	AuditWritten AuditKind = "written"
	// AuditRejected: the receiver refused an item of a webhook.
	AuditRejected AuditKind = "rejected"
	// AuditIgnored: the receiver accepted an item of a webhook that is
	// valid but never a signal (a Normal Kubernetes event, a Grafana
	// contact point test).
	AuditIgnored AuditKind = "ignored"
	// AuditEnded: the remediation controller set a terminal phase on a
	// request, and the writer ended its incidents.
	AuditEnded AuditKind = "ended"
)

// Write operations of an AuditWritten record.
const (
	WriteCreated = "created"
	WriteUpdated = "updated"
)

// Audit is a decision a stage recorded for review that no message between
// the stages carries: which storm a new incident joined, which request a
// write changed and to what revision (with the rules that classified it),
// which webhook item was refused and why. Stages publish it on
// <prefix>.audit.<stage>, kept in the INCIDENTS stream beside the events,
// and nothing consumes it but `stormweir replay` and `stormweir explain`.
type Audit struct {
	Kind AuditKind `json:"kind"`
	// Time is when the stage decided, on its clock.
	Time        time.Time `json:"time"`
	IncidentID  string    `json:"incidentID,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`

	// AuditRouted: the storm joined, its type, and whether this incident
	// opened it.
	StormID   string    `json:"stormID,omitempty"`
	StormType StormType `json:"stormType,omitempty"`
	Opened    bool      `json:"opened,omitempty"`

	// AuditWritten: the request (namespace/name), the operation, the
	// incident or storm revision the write carries, and how it was
	// classified and placed.
	Request         string `json:"request,omitempty"`
	Operation       string `json:"operation,omitempty"`
	Revision        int64  `json:"revision,omitempty"`
	Environment     string `json:"environment,omitempty"`
	EnvironmentRule string `json:"environmentRule,omitempty"`
	Priority        string `json:"priority,omitempty"`
	PriorityRule    string `json:"priorityRule,omitempty"`
	// FallbackFrom is the signal's namespace when the request went to
	// the fallback namespace because that one does not exist.
	FallbackFrom string `json:"fallbackFrom,omitempty"`
	// Phase is the terminal phase the remediation controller set
	// (AuditEnded).
	Phase string `json:"phase,omitempty"`

	// AuditRejected, AuditIgnored: the item's source, position and name,
	// and why.
	Source string `json:"source,omitempty"`
	Index  int    `json:"index,omitempty"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason,omitempty"`
}
