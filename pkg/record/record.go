// Package record owns the incident record: one per fingerprint, the state
// every stage after the receiver reads or changes (DESIGN §3). The deduper
// decides on it, the aggregator records its route, the writer reads it and
// ends it; each takes only the interface of its own need (Decider, Router,
// Reader, Ender), so no stage imports another to reach it. Store combines
// them; it has a Redis implementation (atomic Lua per change, one Cluster
// slot per fingerprint) and an in-memory twin, and both pass the same
// conformance suite (record/recordtest).
package record

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

// Decider is the deduper's need: decide what a signal does to its
// fingerprint's record.
type Decider interface {
	// Decide applies the signal sig, identified by msgID, to its
	// fingerprint's record. A msgID applied before (within the seen TTL)
	// changes nothing and returns Duplicate with the original decision.
	// Every decision that changes the record raises its Revision by one;
	// resolved_unknown changes nothing. Any error means nothing was
	// decided: callers retry, they never assume a new incident.
	Decide(ctx context.Context, sig *signal.Head, msgID string) (Result, error)
}

// BatchDecider is implemented by stores that decide many signals in one
// round trip. The deduper uses it when its store has it: decisions that
// arrive together pay one Redis pipeline instead of one round trip each.
type BatchDecider interface {
	// DecideBatch decides each of reqs as Decide would, in order: of two
	// signals of one fingerprint the later one sees the earlier one's
	// decision. Every request gets its own result or error; a failed one
	// decided nothing.
	DecideBatch(ctx context.Context, reqs []DecideRequest) []DecideResponse
}

// DecideRequest is one signal to decide, with its message id.
type DecideRequest struct {
	Sig   *signal.Head
	MsgID string
}

// DecideResponse is the result of one DecideRequest, or why it failed.
type DecideResponse struct {
	Result Result
	Err    error
}

// Router is the aggregator's need: record where an incident goes.
type Router interface {
	// SetRoute records the aggregator's route for incidentID and returns
	// the record as it stands, so a storm can count the occurrences seen
	// so far. ErrNotFound when the fingerprint's record is another
	// incident's or gone. The route stays with the record for its life;
	// setting it is not a decision and leaves Revision unchanged.
	//
	// Every decision that saw the route undecided happened before the
	// SetRoute that decided it, so the record SetRoute returns includes
	// all of them.
	SetRoute(ctx context.Context, fingerprint, incidentID, route string) (Record, error)
}

// Reader reads a record: the aggregator reads the route of an update
// decided before the route was known, the writer an incident's newest
// state.
type Reader interface {
	// Get returns the fingerprint's current record, or ErrNotFound.
	Get(ctx context.Context, fingerprint string) (Record, error)
}

// Ender is the writer's need when a remediation finishes.
type Ender interface {
	// End removes incidentID's record (its remediation reached a terminal
	// phase), so the next firing of the fingerprint opens a new incident.
	// Ending an incident that is not the current one does nothing.
	End(ctx context.Context, fingerprint, incidentID string) error
}

// Finished names a request that reached a terminal phase, as the next
// request of the same fingerprint refers to it (spec.previousRequestRef).
type Finished struct {
	Namespace  string
	Name       string
	IncidentID string
	Phase      string
}

// Finishes is the writer's memory of each fingerprint's latest finished
// request. It is kept in the store rather than in the writer, so the
// writer's memory does not grow with the requests that finished (the
// writer's cache holds active requests only).
type Finishes interface {
	// SetFinished remembers f as the fingerprint's latest finished
	// request until ttl has passed on the store's clock.
	SetFinished(ctx context.Context, fingerprint string, f Finished, ttl time.Duration) error
	// LastFinished returns the fingerprint's latest finished request, or
	// ErrNotFound.
	LastFinished(ctx context.Context, fingerprint string) (Finished, error)
}

// Store decides and keeps incident records. Every method is atomic per
// fingerprint and safe for concurrent use by any number of replicas.
type Store interface {
	Decider
	Router
	Reader
	Ender
	Finishes
}

// Checker is implemented by stores with a dependency to probe (Redis);
// stages add it to readiness.
type Checker interface {
	Check(ctx context.Context) error
}

// Refresh brings e to r's state and reports whether it changed e. An
// event without an incident (IncidentID empty) takes the whole record: it
// is how an event is built from a decision. An event of r's incident
// takes r's values when r is at a newer revision: the stages read records
// long after the events were decided (a backlog, an update that waited for
// its route), and the record's values are absolute, so the newest state
// is never wrong. A record of another incident leaves e as it is.
func Refresh(e *incident.Event, r *Record) bool {
	if e.IncidentID != "" && (r.IncidentID != e.IncidentID || r.Revision <= e.Revision) {
		return false
	}
	e.IncidentID, e.Fingerprint, e.Revision = r.IncidentID, r.Fingerprint, r.Revision
	e.State, e.Count, e.Flaps = r.State, r.Count, r.Flaps
	e.FirstSeen, e.LastSeen, e.ResolvedAt = r.FirstSeen, r.LastSeen, r.ResolvedAt
	e.Route = r.Route
	return true
}
