package record

import (
	"context"
	"sync"
	"time"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// MemoryStore is the in-process Store: the same decisions as RedisStore,
// for one process (the all-in-one mode) and for offline replay, where a
// clock driven by the recorded stream decides the windows. It passes the
// same conformance suite as RedisStore.
type MemoryStore struct {
	cfg config.Dedup
	clk clock.Clock

	mu      sync.Mutex
	records map[string]*memRecord
	seen    map[seenKey]seenMark
	ops     int
	// finished holds each fingerprint's latest finished request (Finishes).
	finished map[string]memFinished
}

type memFinished struct {
	Finished
	expires int64
}

type memRecord struct {
	Record
	expires int64 // ms; the record is gone at or after this instant
	// events is the highest count counted per Kubernetes event uid.
	events map[string]int64
}

// add counts the occurrences sig reports on r and returns how many were
// new: one for a signal that is one occurrence by itself, the rise of its
// count over the highest one counted for a Kubernetes event (zero for a
// re-post of a count already counted).
func (r *memRecord) add(sig *signal.Head) int64 {
	key, n := sig.Occurrences()
	if key == "" {
		return 1
	}
	if r.events == nil {
		r.events = map[string]int64{}
	}
	added := max(n-r.events[key], 0)
	r.events[key] = max(n, r.events[key])
	return added
}

type seenKey struct{ fingerprint, msgID string }

type seenMark struct {
	decision   incident.Decision
	incidentID string
	expires    int64
}

// sweepEvery is how many decisions pass between sweeps of expired state;
// records and marks are also expired lazily when touched.
const sweepEvery = 4096

// NewMemoryStore returns an empty MemoryStore deciding with cfg's windows
// on clk's time.
func NewMemoryStore(cfg config.Dedup, clk clock.Clock) *MemoryStore {
	return &MemoryStore{cfg: cfg, clk: clk, records: map[string]*memRecord{}, seen: map[seenKey]seenMark{}, finished: map[string]memFinished{}}
}

// live returns fp's record if it has not expired at now.
func (s *MemoryStore) live(fp string, now int64) *memRecord {
	r := s.records[fp]
	if r == nil || r.expires <= now {
		return nil
	}
	return r
}

// DecideBatch implements BatchDecider: the decisions one after another,
// as the Redis store's pipeline takes them.
func (s *MemoryStore) DecideBatch(ctx context.Context, reqs []DecideRequest) []DecideResponse {
	out := make([]DecideResponse, len(reqs))
	for i, r := range reqs {
		out[i].Result, out[i].Err = s.Decide(ctx, r.Sig, r.MsgID)
	}
	return out
}

// Decide implements Decider.
func (s *MemoryStore) Decide(ctx context.Context, sig *signal.Head, msgID string) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := CheckSignal(sig); err != nil {
		return Result{}, err
	}
	now := ms(s.clk.Now())
	fp := sig.Fingerprint
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops++
	if s.ops%sweepEvery == 0 {
		s.sweep(now)
	}

	key := seenKey{fp, msgID}
	if m, ok := s.seen[key]; ok && m.expires > now {
		res := Result{Decision: m.decision, Duplicate: true}
		if r := s.live(fp, now); r != nil && r.IncidentID == m.incidentID {
			res.Record = r.Record
		}
		return res, nil
	}

	window, reopen := s.cfg.Window.Milliseconds(), s.cfg.ReopenWindow.Milliseconds()
	r := s.live(fp, now)
	var d incident.Decision
	switch {
	case r == nil && sig.Firing():
		d = incident.DecisionNew
		r = &memRecord{Record: Record{
			IncidentID: IncidentID(fp, msgID), Fingerprint: fp, State: incident.StateFiring,
			FirstSeen: fromMS(now), LastSeen: fromMS(now), Revision: 1, Route: incident.RouteUndecided,
		}, expires: now + window}
		r.Count = r.add(sig)
		s.records[fp] = r
	case r == nil:
		d = incident.DecisionResolvedUnknown
		delete(s.records, fp)
	case r.State == incident.StateFiring && sig.Firing():
		d = incident.DecisionOccurrence
		r.Count += r.add(sig)
		r.LastSeen = fromMS(now)
		r.Revision++
		r.expires = now + window
	case r.State == incident.StateFiring:
		d = incident.DecisionResolved
		r.State = incident.StateResolved
		r.ResolvedAt = fromMS(now)
		r.Revision++
		r.expires = now + reopen
	case sig.Firing():
		d = incident.DecisionReopened
		r.State = incident.StateFiring
		r.Count += r.add(sig)
		r.Flaps++
		r.LastSeen = fromMS(now)
		r.ResolvedAt = time.Time{}
		r.Revision++
		r.expires = now + window
	default:
		d = incident.DecisionResolvedUnknown
	}
	res := Result{Decision: d}
	mark := seenMark{decision: d, expires: now + s.cfg.SeenTTL.Milliseconds()}
	if r != nil {
		res.Record = r.Record
		mark.incidentID = r.IncidentID
	}
	s.seen[key] = mark
	return res, nil
}

// sweep drops expired records and marks; called with mu held.
func (s *MemoryStore) sweep(now int64) {
	for fp, r := range s.records {
		if r.expires <= now {
			delete(s.records, fp)
		}
	}
	for k, m := range s.seen {
		if m.expires <= now {
			delete(s.seen, k)
		}
	}
	for fp, f := range s.finished {
		if f.expires <= now {
			delete(s.finished, fp)
		}
	}
}

// SetRoute implements Router.
func (s *MemoryStore) SetRoute(ctx context.Context, fingerprint, incidentID, route string) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	now := ms(s.clk.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.live(fingerprint, now)
	if r == nil || r.IncidentID != incidentID {
		return Record{}, ErrNotFound
	}
	r.Route = route
	return r.Record, nil
}

// Get implements Reader.
func (s *MemoryStore) Get(ctx context.Context, fingerprint string) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	now := ms(s.clk.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.live(fingerprint, now)
	if r == nil {
		return Record{}, ErrNotFound
	}
	return r.Record, nil
}

// End implements Ender.
func (s *MemoryStore) End(ctx context.Context, fingerprint, incidentID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.records[fingerprint]; r != nil && r.IncidentID == incidentID {
		delete(s.records, fingerprint)
	}
	return nil
}

// SetFinished implements Finishes.
func (s *MemoryStore) SetFinished(ctx context.Context, fingerprint string, f Finished, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished[fingerprint] = memFinished{Finished: f, expires: ms(s.clk.Now().Add(ttl))}
	return nil
}

// LastFinished implements Finishes.
func (s *MemoryStore) LastFinished(ctx context.Context, fingerprint string) (Finished, error) {
	if err := ctx.Err(); err != nil {
		return Finished{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.finished[fingerprint]
	if !ok || f.expires <= ms(s.clk.Now()) {
		return Finished{}, ErrNotFound
	}
	return f.Finished, nil
}

var _ Store = (*MemoryStore)(nil)
