// Package bus is stormweir's use of NATS JetStream: subject names, stream
// and consumer definitions applied at start-up, publishing with idempotency
// keys, and the one worker loop every stage runs (DESIGN §1).
package bus

import (
	"strings"

	"github.com/stormweir/stormweir/pkg/signal"
)

// Subjects names every subject of one pipeline; all share a prefix so
// several pipelines can share a NATS deployment.
type Subjects struct {
	prefix string
}

// NewSubjects returns the subjects under prefix.
func NewSubjects(prefix string) Subjects { return Subjects{prefix: prefix} }

// Prefix returns the subject prefix.
func (s Subjects) Prefix() string { return s.prefix }

// Signals is where the receiver publishes signals from source.
func (s Subjects) Signals(src signal.Source) string { return s.prefix + ".signals." + string(src) }

// AllSignals matches every source's signals (the deduper's input).
func (s Subjects) AllSignals() string { return s.prefix + ".signals.>" }

// DedupNew carries new incidents from the deduper to the aggregator.
func (s Subjects) DedupNew() string { return s.prefix + ".dedup.new" }

// DedupMember carries repeats of storm members from the deduper to the
// aggregator, which counts them on the storm.
func (s Subjects) DedupMember() string { return s.prefix + ".dedup.member" }

// DedupUnrouted carries updates (occurrences, resolutions, reopenings) of
// incidents the aggregator had not routed yet when the deduper decided
// them: the aggregator routes them once it has (DESIGN §4).
func (s Subjects) DedupUnrouted() string { return s.prefix + ".dedup.unrouted" }

// AllDedup matches the deduper's outputs to the aggregator (its input).
func (s Subjects) AllDedup() string { return s.prefix + ".dedup.>" }

// IncidentsUpdate carries occurrences, resolutions and reopenings of
// incidents routed individually, to the writer.
func (s Subjects) IncidentsUpdate() string { return s.prefix + ".incidents.update" }

// IncidentsOpen carries individual new incidents to the writer.
func (s Subjects) IncidentsOpen() string { return s.prefix + ".incidents.open" }

// IncidentsStorm carries storm lifecycle events to the writer.
func (s Subjects) IncidentsStorm() string { return s.prefix + ".incidents.storm" }

// AllIncidents matches everything the writer consumes.
func (s Subjects) AllIncidents() string { return s.prefix + ".incidents.>" }

// DLQ is where stage parks messages it gave up on.
func (s Subjects) DLQ(stage string) string { return s.prefix + ".dlq." + stage }

// AllDLQ matches every stage's DLQ.
func (s Subjects) AllDLQ() string { return s.prefix + ".dlq.>" }

// Audit is where stage records the decisions no message between the
// stages carries (incident.Audit), for review.
func (s Subjects) Audit(stage string) string { return s.prefix + ".audit." + stage }

// AllAudit matches every stage's audit records.
func (s Subjects) AllAudit() string { return s.prefix + ".audit.>" }

// StreamName returns the JetStream stream name for kind ("SIGNALS",
// "INCIDENTS", "DLQ") under this prefix, e.g. STORMWEIR_SIGNALS.
func (s Subjects) StreamName(kind string) string {
	p := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(s.prefix))
	return p + "_" + kind
}
