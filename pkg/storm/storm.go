// Package storm owns storm windows (DESIGN §4): it folds many new incidents
// of one scope, or of one alertname in many scopes, into a single storm
// incident, and closes the window after inactivity or a maximum duration.
//
// All window state lives in a Store. The Redis implementation decides with
// one atomic Lua script per call, each touching a single Redis Cluster slot
// (the scope's hash tag), so any number of aggregator replicas share the
// windows; the in-memory twin gives the same answers in one process. Both
// pass the conformance suite in storm/stormtest. No goroutine owns a window:
// the sweeper of every replica looks for expired windows in the store, and
// an atomic claim with a lease lets exactly one of them emit the close.
//
// Decisions where DESIGN §4 leaves room:
//
//   - Rate storm: more than RateThreshold new incidents of one scope within
//     RateWindow (sliding). The first RateThreshold stay individual; the
//     next opens the storm as its first member. The storm's affected
//     resources are every target seen in the scope's window, so the
//     precursors are listed too; Members counts only incidents folded in.
//   - Pattern storm: one alertname in more than PatternThreshold distinct
//     rate scopes within PatternWindow (each scope with at least one
//     target). It is the cross-scope detector: many targets within one
//     scope are the rate detector's business, otherwise the lower default
//     pattern threshold (5) would pre-empt every rate storm (10). Only
//     incidents the rate detector left individual are shown to it, and it
//     is off when the scope is [alertname] alone. Cluster-scoped targets
//     without a namespace share one rate scope per alertname, so for them
//     the rate threshold applies.
//   - Alertmanager's truncatedAlerts lowers the rate threshold of the
//     incident's scope by that number (floored at 0): they are alerts of
//     the same group that will not arrive one by one.
//   - A window ends inactivity after its last new member (a member's
//     repeats do not extend it) or MaxDuration after detection. A storm
//     past its deadline takes no members even before a sweeper has closed
//     it; the close carries that deadline as ClosedAt. The rate window is
//     not reset by a close, so a storm that outlives MaxDuration continues
//     at once as a new storm.
//   - Storm ids are "s" + 24 hex of the scope hash + "-" + 12 hex derived
//     from the opening incident: deterministic and DNS-label safe.
//   - Repeats of a member after its storm closed still count on it: the
//     writer gets an updated event (with ClosedAt set) by revision.
package storm

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Verdict is what an observed new incident became.
type Verdict string

// Verdicts.
const (
	// Individual: the incident gets its own CR.
	Individual Verdict = "individual"
	// Opened: the incident crossed the threshold and opened a storm, of
	// which it is the first member.
	Opened Verdict = "opened"
	// Member: the incident joined the scope's open storm.
	Member Verdict = "member"
)

// State is a storm window's lifecycle state as stored.
type State string

// Storm states.
const (
	// StateOpen: the window accepts members.
	StateOpen State = "open"
	// StateClosing: a sweeper claimed the expired window and is publishing
	// its close; if it dies, the lease runs out and another one finishes.
	StateClosing State = "closing"
	// StateClosed: the close was published.
	StateClosed State = "closed"
)

// ErrNotFound is returned for a storm the store does not know (never
// opened, or expired long after its close).
var ErrNotFound = errors.New("storm not found")

// Observation is one new incident presented to one detector.
type Observation struct {
	// Type is the detector: incident.StormRate or incident.StormPattern.
	Type incident.StormType
	// Scope is the detector's scope; it names the window.
	Scope Scope
	// IncidentID identifies the incident; observing it again returns the
	// first verdict and changes nothing.
	IncidentID string
	// Unit is what the threshold counts distinct occurrences of within
	// the window: the incident id for rate storms, the incident's rate
	// scope for pattern storms.
	Unit string
	// Target is the incident's resource; storms list the targets seen.
	Target signal.Target
	// Count is the incident's absolute occurrence count so far.
	Count int64
	// Threshold: a storm opens when more than this many distinct units
	// are in the window.
	Threshold int
	// Window is the sliding window the threshold applies to.
	Window time.Duration
	// Inactivity and MaxDuration are stored with a storm this observation
	// opens; they decide when its window closes.
	Inactivity  time.Duration
	MaxDuration time.Duration
	// Signal is the encoded representative signal, kept when this
	// observation opens a storm (and only then sent to Redis).
	Signal []byte
	// Now is the decision time.
	Now time.Time
}

// Decision is a Store's answer to an Observation.
type Decision struct {
	Verdict Verdict
	// Replayed is set when the incident had been observed before: the
	// verdict is the first one and nothing changed.
	Replayed bool
	// Storm is the storm the incident belongs to (Opened, Member).
	Storm Snapshot
}

// MemberUpdate reports a storm member's absolute occurrence count.
type MemberUpdate struct {
	StormID    string
	IncidentID string
	Target     signal.Target
	// Count is absolute; the store keeps the highest seen per member, so
	// updates are idempotent and order-insensitive.
	Count int64
	Now   time.Time
}

// ClaimStatus is the outcome of a close claim.
type ClaimStatus string

// Claim outcomes.
const (
	// Claimed: the caller holds the lease and must publish the close.
	Claimed ClaimStatus = "claimed"
	// NotDue: the window is still open; Claim.NextCheck says when to look
	// again.
	NotDue ClaimStatus = "notdue"
	// Busy: another replica holds an unexpired lease.
	Busy ClaimStatus = "busy"
	// Done: the close was already published (or the storm is gone).
	Done ClaimStatus = "done"
)

// Claim is the result of Store.Claim.
type Claim struct {
	Status ClaimStatus
	// Storm is the storm to close (Claimed); its ClosedAt and Revision
	// were fixed by the first claim, so a re-claim after a crash
	// publishes the same close.
	Storm Snapshot
	// NextCheck is when the window may next be due (NotDue, Busy).
	NextCheck time.Time
}

// Store keeps storm windows. Every method is atomic per scope and safe for
// concurrent use by any number of replicas.
type Store interface {
	// Observe counts a new incident in its scope's window and decides
	// whether it stays individual, opens a storm or joins the open one.
	Observe(ctx context.Context, o Observation) (Decision, error)
	// Track raises a member's occurrence count (adding it as a member if
	// it was not one) and returns the storm. ErrNotFound for an unknown
	// storm.
	Track(ctx context.Context, u MemberUpdate) (Snapshot, error)
	// Get returns a storm. ErrNotFound for an unknown storm.
	Get(ctx context.Context, stormID string) (Snapshot, error)
	// Due lists up to limit storms whose window may have ended by now.
	Due(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Claim takes the right to publish stormID's close, if its window has
	// ended, for lease; token identifies the claimant.
	Claim(ctx context.Context, stormID, token string, lease time.Duration, now time.Time) (Claim, error)
	// Finish records that the close was published. It reports false when
	// token no longer holds the claim (another replica took it over after
	// the lease ran out, and finishes it itself).
	Finish(ctx context.Context, stormID, token string) (bool, error)
	// Open counts the storms not yet closed, over all replicas.
	Open(ctx context.Context) (int64, error)
}

// Snapshot is a storm as stored; every count is absolute.
type Snapshot struct {
	ID         string
	Type       incident.StormType
	Scope      Scope
	State      State
	Revision   int64
	DetectedAt time.Time
	// LastMember is when the last member joined; inactivity counts from
	// it.
	LastMember time.Time
	// LastSeen is the latest activity: a member joining or repeating.
	LastSeen time.Time
	ClosedAt time.Time
	// Inactivity and MaxDuration are the window's limits.
	Inactivity  time.Duration
	MaxDuration time.Duration
	Members     int64
	Occurrences int64
	// Affected lists up to incident.MaxAffected targets, first seen first.
	Affected      []signal.Target
	AffectedTotal int64
	// Signal is the encoded signal of the incident that opened the storm.
	Signal []byte
}

// Deadline is when the window ends: inactivity after the last member, or
// the maximum duration after detection, whichever is first.
func (s *Snapshot) Deadline() time.Time {
	a, b := s.LastMember.Add(s.Inactivity), s.DetectedAt.Add(s.MaxDuration)
	if b.Before(a) {
		return b
	}
	return a
}

// Event returns the storm as the message the writer consumes. The signal
// goes on as the bytes the store kept, as the receiver encoded them.
func (s *Snapshot) Event(phase incident.StormPhase) incident.Storm {
	return incident.Storm{
		Phase:         phase,
		StormID:       s.ID,
		Fingerprint:   s.Scope.Hash,
		Scope:         s.Scope.Values,
		Type:          s.Type,
		Revision:      s.Revision,
		DetectedAt:    s.DetectedAt,
		LastSeen:      s.LastSeen,
		ClosedAt:      s.ClosedAt,
		Members:       s.Members,
		Occurrences:   s.Occurrences,
		Affected:      s.Affected,
		AffectedTotal: s.AffectedTotal,
		Signal:        s.Signal,
	}
}

// targetKey is the canonical encoding of a target, the unit of "distinct
// affected resources": kind, namespace and name joined by the ASCII unit
// separator, which Kubernetes names cannot contain. It is cheap to split,
// which matters because a storm snapshot carries up to 100 of them.
func targetKey(t signal.Target) string {
	return t.Kind + "\x1f" + t.Namespace + "\x1f" + t.Name
}

func parseTarget(k string) signal.Target {
	kind, rest, _ := strings.Cut(k, "\x1f")
	ns, name, _ := strings.Cut(rest, "\x1f")
	return signal.Target{Kind: kind, Namespace: ns, Name: name}
}
