// Package dedup owns the incident record: one per fingerprint, deciding
// for each signal whether it opens an incident, repeats one, resolves or
// reopens it (DESIGN §3). The Store interface has a Redis implementation
// (atomic Lua per decision, one Cluster slot per fingerprint) and an
// in-memory twin; both pass the same conformance suite (dedup/deduptest).
package dedup

import (
	"context"
	"errors"
	"time"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Record is the state of one incident, as stored.
type Record struct {
	IncidentID  string
	Fingerprint string
	State       incident.State
	Count       int64
	Flaps       int64
	FirstSeen   time.Time
	LastSeen    time.Time
	ResolvedAt  time.Time
	// Revision increases with every change to the record.
	Revision int64
	// Route is the aggregator's decision (incident.RouteIndividual, a
	// storm incident id, or incident.RouteUndecided).
	Route string
}

// Result is one decision and the record after it.
type Result struct {
	// Decision is what the signal did; for a redelivered message it is the
	// decision taken when the message was first applied.
	Decision incident.Decision
	// Duplicate is set when the message had already been applied: nothing
	// changed, and Record is the record's current state. The caller
	// republishes its output (same msg-id), since the first attempt may
	// have died before publishing. When the incident the message was
	// applied to has since expired or ended, Record is zero (IncidentID
	// empty): there is nothing left to republish.
	Duplicate bool
	Record    Record
}

// ErrNotFound is returned when no record exists (or it belongs to another
// incident than the one named).
var ErrNotFound = errors.New("incident record not found")

// Store decides and keeps incident records. Every method is atomic per
// fingerprint and safe for concurrent use by any number of replicas.
type Store interface {
	// Decide applies sig, identified by msgID, to its fingerprint's record.
	// A msgID applied before (within the seen TTL) changes nothing and
	// returns Duplicate with the original decision. Every decision that
	// changes the record raises its Revision by one; resolved_unknown
	// changes nothing. Any error means nothing was decided: callers retry,
	// they never assume a new incident.
	Decide(ctx context.Context, sig *signal.Signal, msgID string) (Result, error)
	// SetRoute records the aggregator's route for incidentID and returns
	// the record as it stands, so a storm can count the occurrences seen
	// so far. ErrNotFound when the fingerprint's record is another
	// incident's or gone. The route stays with the record for its life;
	// setting it is not a decision and leaves Revision unchanged.
	SetRoute(ctx context.Context, fingerprint, incidentID, route string) (Record, error)
	// Get returns the fingerprint's current record, or ErrNotFound.
	Get(ctx context.Context, fingerprint string) (Record, error)
	// End removes incidentID's record (its remediation reached a terminal
	// phase), so the next firing of the fingerprint opens a new incident.
	// Ending an incident that is not the current one does nothing.
	End(ctx context.Context, fingerprint, incidentID string) error
}
