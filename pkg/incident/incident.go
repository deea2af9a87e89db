// Package incident defines the messages the stages exchange after
// deduplication: incident events (deduper → aggregator → writer) and storm
// events (aggregator → writer). Every message carries absolute values and a
// revision, never deltas, so a consumer that sees one twice, or two out of
// order, converges to the same state by keeping the highest revision.
package incident

import (
	"encoding/json"
	"time"

	"github.com/stormweir/stormweir/pkg/signal"
)

// Decision is the deduper's verdict on one signal.
type Decision string

// Dedup decisions.
const (
	// DecisionNew opens an incident for a fingerprint with none open.
	DecisionNew Decision = "new"
	// DecisionOccurrence is a repeat of an open incident within its window.
	DecisionOccurrence Decision = "occurrence"
	// DecisionResolved marks an open incident resolved.
	DecisionResolved Decision = "resolved"
	// DecisionReopened is a firing signal for a resolved incident within the
	// reopen window: the same incident fires again and its flap count rises.
	DecisionReopened Decision = "reopened"
	// DecisionResolvedUnknown is a resolved signal with no incident to
	// resolve: counted, never a CR.
	DecisionResolvedUnknown Decision = "resolved_unknown"
	// DecisionDuplicate is a redelivery of a message already counted.
	DecisionDuplicate Decision = "duplicate"
)

// State is an incident's signal state.
type State string

// Incident states.
const (
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Route records the aggregator's decision for an incident's fingerprint. It
// lives on the incident record so the deduper can send a storm member's
// repeats to the storm rather than to the writer.
const (
	// RouteUndecided: the aggregator has not yet seen the new incident.
	RouteUndecided = ""
	// RouteIndividual: the incident gets its own CR.
	RouteIndividual = "individual"
	// Any other value is the storm incident id the fingerprint belongs to.
)

// Event is one incident state change. The deduper publishes DecisionNew on
// <prefix>.dedup.new and the other decisions by the incident's route:
// <prefix>.incidents.update when it is individual, <prefix>.dedup.member
// when it is a storm's, <prefix>.dedup.unrouted while it is undecided. The
// aggregator forwards individual new incidents on <prefix>.incidents.open
// and unrouted updates of individual incidents on
// <prefix>.incidents.update.
type Event struct {
	Decision    Decision `json:"decision"`
	IncidentID  string   `json:"incidentID"`
	Fingerprint string   `json:"fingerprint"`
	// Revision increases with every decision on the incident; consumers
	// ignore an event whose revision is not above what they applied.
	Revision int64 `json:"revision"`
	State    State `json:"state"`
	// Count is the absolute number of firing occurrences of the incident.
	Count      int64     `json:"count"`
	Flaps      int64     `json:"flaps,omitempty"`
	FirstSeen  time.Time `json:"firstSeen"`
	LastSeen   time.Time `json:"lastSeen"`
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Route is the incident record's route when the decision was taken.
	Route string `json:"route,omitempty"`
	// Signal is the signal the decision was taken on, as the receiver
	// encoded it (signal.Encode): every stage carries these bytes on
	// unchanged and decodes them (signal.Decode, signal.DecodeHead) only
	// where it reads the signal.
	Signal json.RawMessage `json:"signal"`
}

// StormType says how a storm was detected.
type StormType string

// Storm types.
const (
	// StormRate: more than N new incidents in one scope within a window.
	StormRate StormType = "rate"
	// StormPattern: more than M distinct targets with one alertname.
	StormPattern StormType = "pattern"
)

// StormPhase is the lifecycle step a storm event reports.
type StormPhase string

// Storm phases.
const (
	StormOpened  StormPhase = "opened"
	StormUpdated StormPhase = "updated"
	StormClosed  StormPhase = "closed"
)

// MaxAffected caps the affected resources a storm event lists; the true
// number travels in AffectedTotal.
const MaxAffected = 100

// Storm is the aggregator's event for one storm incident, published on
// <prefix>.incidents.storm. All counts are absolute.
type Storm struct {
	Phase StormPhase `json:"phase"`
	// StormID is the storm incident's id; it names the storm CR.
	StormID string `json:"stormID"`
	// Fingerprint identifies the storm's scope (hash of the scope values).
	Fingerprint string            `json:"fingerprint"`
	Scope       map[string]string `json:"scope"`
	Type        StormType         `json:"type"`
	Revision    int64             `json:"revision"`
	DetectedAt  time.Time         `json:"detectedAt"`
	LastSeen    time.Time         `json:"lastSeen"`
	ClosedAt    time.Time         `json:"closedAt,omitzero"`
	// Members is the number of incidents folded into the storm.
	Members int64 `json:"members"`
	// Occurrences is the total occurrence count over all members.
	Occurrences int64 `json:"occurrences"`
	// Affected lists up to MaxAffected target resources.
	Affected []signal.Target `json:"affected,omitempty"`
	// AffectedTotal is the true number of distinct affected resources.
	AffectedTotal int64 `json:"affectedTotal"`
	// Signal is a representative signal (the one that opened the storm),
	// as the receiver encoded it.
	Signal json.RawMessage `json:"signal"`
}
