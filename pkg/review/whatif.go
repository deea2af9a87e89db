package review

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
)

// Routing is where an incident went: incident.RouteIndividual (a request
// of its own) or the id of the storm it was folded into.
type Routing struct {
	Incident    string `json:"incident"`
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name"`
	// Scope is the incident's aggregator scope (aggregator.scope), for the
	// per-scope counts.
	Scope string `json:"scope"`
	Route string `json:"route"`

	// seq is where the aggregator recorded its decision (stream
	// sequence), for recorded routings.
	seq uint64
}

// StormOutcome is one storm of an outcome.
type StormOutcome struct {
	ID      string             `json:"id"`
	Type    incident.StormType `json:"type"`
	Scope   string             `json:"scope"`
	Members int                `json:"members"`
}

// Outcome is what the aggregator decided (recorded) or would decide
// (simulated) for the incidents of a range.
type Outcome struct {
	Incidents map[string]*Routing
	Storms    map[string]*StormOutcome
}

func newOutcome() *Outcome {
	return &Outcome{Incidents: map[string]*Routing{}, Storms: map[string]*StormOutcome{}}
}

// Requests counts the requests the outcome writes: one per individual
// incident and one per storm.
func (o *Outcome) Requests() int {
	n := len(o.Storms)
	for _, r := range o.Incidents {
		if r.Route == incident.RouteIndividual {
			n++
		}
	}
	return n
}

// Simulator re-runs the deduper's and the aggregator's decisions on
// recorded signals: the same code as the stages (record.Store's Decide,
// storm.Detect), on in-memory stores, on a fake clock set to each
// signal's recorded receipt time. It writes nothing anywhere.
//
// The deduper's decisions are taken in the order the signals were
// stored. The aggregator decides many new incidents at once, so of the
// incidents received in the same millisecond (one webhook's alerts) the
// one it happened to take eleventh opened the storm; the simulation takes
// the new incidents in the order the aggregator recorded its decisions
// (then by receipt), so that the recorded settings reproduce the recorded
// storms and a changed setting changes only what it changes.
type Simulator struct {
	cfg     config.Config
	clk     *clock.Fake
	records *record.MemoryStore
	storms  *storm.MemoryStore
	scoper  *storm.Scoper
	out     *Outcome
	ctx     context.Context
	pending []newIncident
}

// newIncident is a new incident the deduper decided, waiting for the
// aggregator's decision.
type newIncident struct {
	ev  incident.Event
	sig signal.Signal
	at  time.Time
}

// NewSimulator returns a Simulator deciding with cfg's dedup and
// aggregator settings.
func NewSimulator(ctx context.Context, cfg config.Config) *Simulator {
	clk := clock.NewFake(time.Unix(0, 0).UTC())
	return &Simulator{
		cfg: cfg, clk: clk, ctx: ctx,
		records: record.NewMemoryStore(cfg.Dedup, clk),
		storms:  storm.NewMemoryStore(0),
		scoper:  storm.NewScoper(cfg.Aggregator.Scope),
		out:     newOutcome(),
	}
}

// simToken claims the simulated storms' closes.
const simToken = "what-if"

// Signal decides one recorded signal (data as the receiver encoded it),
// received at its ReceivedAt: the storm windows due by then are closed
// first, as the aggregator's sweeper would have.
func (s *Simulator) Signal(data []byte) error {
	var sig signal.Signal
	if err := signal.Decode(data, &sig); err != nil {
		return nil // the deduper dead-letters it: no decision
	}
	if now := sig.ReceivedAt; now.After(s.clk.Now()) {
		s.clk.Set(now)
	}
	head := sig.Head()
	res, err := s.records.Decide(s.ctx, &head, sig.ID)
	if err != nil || res.Duplicate || res.Decision != incident.DecisionNew {
		return nil // an invalid signal is dead-lettered; repeats change no route
	}
	ev := incident.Event{Decision: res.Decision, Signal: data}
	record.Refresh(&ev, &res.Record)
	s.pending = append(s.pending, newIncident{ev: ev, sig: sig, at: s.clk.Now()})
	return nil
}

// Finish takes the aggregator's decisions on the new incidents, in the
// order rec recorded them (see Simulator), and returns the outcome. rec
// may be nil.
func (s *Simulator) Finish(rec *Outcome) (*Outcome, error) {
	// Recorded incidents go in the aggregator's order; one the record does
	// not have (another dedup setting split or merged incidents) goes
	// right after the recorded incident received before it.
	slices.SortStableFunc(s.pending, func(x, y newIncident) int { return x.at.Compare(y.at) })
	keys := make(map[string]uint64, len(s.pending))
	var last uint64
	for i := range s.pending {
		id := s.pending[i].ev.IncidentID
		if rec != nil {
			if r := rec.Incidents[id]; r != nil {
				last = r.seq
				keys[id] = 2 * last
				continue
			}
		}
		keys[id] = 2*last + 1
	}
	slices.SortStableFunc(s.pending, func(x, y newIncident) int {
		return cmp.Compare(keys[x.ev.IncidentID], keys[y.ev.IncidentID])
	})
	// The aggregator decides on its own clock, after the receipt: the
	// simulated time never goes back.
	var now time.Time
	for i := range s.pending {
		if s.pending[i].at.Before(now) {
			s.pending[i].at = now
		}
		now = s.pending[i].at
	}
	for i := range s.pending {
		if err := s.decide(&s.pending[i]); err != nil {
			return nil, err
		}
	}
	s.pending = nil
	return s.out, nil
}

// decide is the aggregator's decision on one new incident, after the
// storm windows due by then were closed, as its sweeper would have.
func (s *Simulator) decide(n *newIncident) error {
	now := n.at
	due, err := s.storms.Due(s.ctx, now, 1<<20)
	if err != nil {
		return err
	}
	for _, id := range due {
		if c, err := s.storms.Claim(s.ctx, id, simToken, time.Minute, now); err == nil && c.Status == storm.Claimed {
			_, _ = s.storms.Finish(s.ctx, id, simToken)
		}
	}
	ev, sig := &n.ev, &n.sig
	d, err := storm.Detect(s.ctx, s.cfg.Aggregator, s.scoper, s.storms, ev, sig, now)
	if err != nil {
		return fmt.Errorf("simulating the aggregator on incident %s: %w", ev.IncidentID, err)
	}
	r := &Routing{Incident: ev.IncidentID, Fingerprint: ev.Fingerprint, Name: sig.Name, Scope: FormatScope(s.scoper.Rate(sig).Values), Route: incident.RouteIndividual}
	if d.Verdict != storm.Individual {
		r.Route = d.Storm.ID
		so := s.out.Storms[d.Storm.ID]
		if so == nil {
			so = &StormOutcome{ID: d.Storm.ID, Type: d.Storm.Type, Scope: FormatScope(d.Storm.Scope.Values)}
			s.out.Storms[d.Storm.ID] = so
		}
		so.Members++
	}
	// The route is recorded as the aggregator does; the deduper's
	// decisions were all taken first, so the record may have expired or
	// been replaced since (ErrNotFound), which changes no route.
	if _, err := s.records.SetRoute(s.ctx, ev.Fingerprint, ev.IncidentID, r.Route); err != nil && !errors.Is(err, record.ErrNotFound) {
		return fmt.Errorf("simulating the route of incident %s: %w", ev.IncidentID, err)
	}
	s.out.Incidents[ev.IncidentID] = r
	return nil
}

// Recorded reads from the decisions stream what the aggregator decided
// for the incidents of the range: the open events of individual incidents
// and the routing records of storm members, and the storms opened.
func Recorded(ctx context.Context, js jetstream.JetStream, prefix string, sel Selector, progress Progress) (*Outcome, error) {
	subj := bus.NewSubjects(prefix)
	out := newOutcome()
	err := ReadStream(ctx, js, bus.ReviewStreams(prefix)[1], sel, progress, func(m *Msg) error {
		switch m.Subject {
		case subj.IncidentsOpen():
			var ev incident.Event
			if incident.Unmarshal(m.Data, &ev) != nil {
				return nil
			}
			var sig signal.Signal
			_ = signal.Decode(ev.Signal, &sig)
			out.Incidents[ev.IncidentID] = &Routing{Incident: ev.IncidentID, Fingerprint: ev.Fingerprint, Name: sig.Name, Route: incident.RouteIndividual, seq: m.Seq}
		case subj.Audit(StageAggregator):
			var a incident.Audit
			if incident.Unmarshal(m.Data, &a) != nil || a.Kind != incident.AuditRouted {
				return nil
			}
			out.Incidents[a.IncidentID] = &Routing{Incident: a.IncidentID, Fingerprint: a.Fingerprint, Route: a.StormID, seq: m.Seq}
			so := out.Storms[a.StormID]
			if so == nil {
				so = &StormOutcome{ID: a.StormID, Type: a.StormType}
				out.Storms[a.StormID] = so
			}
			so.Members++
		case subj.IncidentsStorm():
			var st incident.Storm
			if incident.Unmarshal(m.Data, &st) != nil {
				return nil
			}
			if so := out.Storms[st.StormID]; so != nil {
				so.Scope = FormatScope(st.Scope)
			} else {
				out.Storms[st.StormID] = &StormOutcome{ID: st.StormID, Type: st.Type, Scope: FormatScope(st.Scope)}
			}
		}
		return nil
	})
	return out, err
}

// Change is one incident whose route differs.
type Change struct {
	Incident string `json:"incident"`
	Name     string `json:"name"`
	Scope    string `json:"scope"`
	// Was and Now are the recorded and the simulated route.
	Was string `json:"was"`
	Now string `json:"now"`
}

// StormPair is a recorded storm and the simulated storm of the same
// scope and type that stands for it (their ids differ when another
// incident opened it).
type StormPair struct {
	Was *StormOutcome `json:"was"`
	Now *StormOutcome `json:"now"`
}

// Diff compares a simulated outcome with the recorded one.
type Diff struct {
	// Settings names what was changed, e.g. "aggregator.rate_threshold=50".
	Settings []string `json:"settings"`
	// Incidents counts the incidents compared (simulated ones with a
	// recorded route).
	Incidents                int `json:"incidents"`
	StormsWas, StormsNow     int `json:"-"`
	RequestsWas, RequestsNow int `json:"-"`
	// Changes are the incidents whose route changes: individual to a
	// storm or back, or to a storm of another scope.
	Changes []Change `json:"changes"`
	// Kept pairs the storms both sides have; StormsOnlyWas and
	// StormsOnlyNow are the storms of one side only.
	Kept          []StormPair     `json:"stormsKept,omitempty"`
	StormsOnlyWas []*StormOutcome `json:"stormsRecordedOnly,omitempty"`
	StormsOnlyNow []*StormOutcome `json:"stormsSimulatedOnly,omitempty"`
}

// Compare reports how sim differs from rec for the incidents both know.
// A simulated storm stands for a recorded one of the same scope and type
// (paired in the order they opened), so a storm opened by another
// incident of the same flood is the same storm, and its members do not
// change.
func Compare(rec, sim *Outcome, settings []string) *Diff {
	d := &Diff{Settings: settings}
	rec = matchIncidents(rec, sim)
	ids := make([]string, 0, len(sim.Incidents))
	for id := range sim.Incidents {
		if rec.Incidents[id] != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	// The storms each side's compared incidents joined, in the order of
	// their first member.
	var usedWas, usedNow []string
	seenWas, seenNow := map[string]bool{}, map[string]bool{}
	for _, id := range ids {
		if r := rec.Incidents[id].Route; r != incident.RouteIndividual && !seenWas[r] {
			seenWas[r] = true
			usedWas = append(usedWas, r)
		}
		if r := sim.Incidents[id].Route; r != incident.RouteIndividual && !seenNow[r] {
			seenNow[r] = true
			usedNow = append(usedNow, r)
		}
	}
	slices.Sort(usedWas)
	slices.Sort(usedNow)
	key := func(s *StormOutcome) string { return string(s.Type) + " " + s.Scope }
	free := map[string][]string{}
	for _, id := range usedNow {
		k := key(sim.Storms[id])
		free[k] = append(free[k], id)
	}
	pair := map[string]string{} // recorded storm → simulated storm
	for _, id := range usedWas {
		k := key(rec.Storms[id])
		if f := free[k]; len(f) > 0 {
			pair[id], free[k] = f[0], f[1:]
			d.Kept = append(d.Kept, StormPair{Was: rec.Storms[id], Now: sim.Storms[f[0]]})
		} else {
			d.StormsOnlyWas = append(d.StormsOnlyWas, rec.Storms[id])
		}
	}
	paired := map[string]bool{}
	for _, now := range pair {
		paired[now] = true
	}
	for _, id := range usedNow {
		if !paired[id] {
			d.StormsOnlyNow = append(d.StormsOnlyNow, sim.Storms[id])
		}
	}
	for _, id := range ids {
		was, now := rec.Incidents[id], sim.Incidents[id]
		d.Incidents++
		if was.Route == incident.RouteIndividual {
			d.RequestsWas++
		}
		if now.Route == incident.RouteIndividual {
			d.RequestsNow++
		}
		same := was.Route == now.Route || pair[was.Route] == now.Route && now.Route != ""
		if !same {
			d.Changes = append(d.Changes, Change{Incident: was.Incident, Name: cmp.Or(now.Name, was.Name), Scope: now.Scope, Was: was.Route, Now: now.Route})
		}
	}
	d.StormsWas, d.StormsNow = len(usedWas), len(usedNow)
	d.RequestsWas += d.StormsWas
	d.RequestsNow += d.StormsNow
	return d
}

// matchIncidents returns rec with its incidents keyed as sim names them.
// An incident's id derives from the signal that opened it; two signals of
// one fingerprint decided at once by two deduper replicas (or handlers)
// may open it in either order, so a simulated incident the record does
// not know by id is the recorded incident of its fingerprint that the
// simulation does not know, when there is exactly one.
func matchIncidents(rec, sim *Outcome) *Outcome {
	byFP := map[string][]string{}
	for id, r := range rec.Incidents {
		if sim.Incidents[id] == nil {
			byFP[r.Fingerprint] = append(byFP[r.Fingerprint], id)
		}
	}
	out := &Outcome{Incidents: make(map[string]*Routing, len(rec.Incidents)), Storms: rec.Storms}
	for id, r := range rec.Incidents {
		out.Incidents[id] = r
	}
	for id, r := range sim.Incidents {
		if rec.Incidents[id] != nil {
			continue
		}
		if c := byFP[r.Fingerprint]; len(c) == 1 {
			out.Incidents[id] = rec.Incidents[c[0]]
			delete(out.Incidents, c[0])
		}
	}
	return out
}

func kindOf(route string) string {
	if route == incident.RouteIndividual {
		return "individual"
	}
	return "storm"
}

func describeRoute(route string) string {
	if route == incident.RouteIndividual {
		return "own request"
	}
	return "storm " + route
}

// Write reports the difference for people: the totals, the storms of one
// side only, then every incident whose route changes, by scope.
func (d *Diff) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "with %s: ", strings.Join(d.Settings, ", "))
	fmt.Fprintf(&b, "%s, %s (%d incidents compared)\n",
		delta(d.StormsWas, d.StormsNow, "storm", "storms"), delta(d.RequestsWas, d.RequestsNow, "request", "requests"), d.Incidents)
	for _, p := range d.Kept {
		if p.Was.Members != p.Now.Members {
			fmt.Fprintf(&b, "  storm %s (%s, scope %s): %d members -> %d (now opened as %s)\n", p.Was.ID, p.Was.Type, p.Was.Scope, p.Was.Members, p.Now.Members, p.Now.ID)
		}
	}
	for _, s := range d.StormsOnlyWas {
		fmt.Fprintf(&b, "  no longer a storm: %s (%s, scope %s, %d members recorded)\n", s.ID, s.Type, s.Scope, s.Members)
	}
	for _, s := range d.StormsOnlyNow {
		fmt.Fprintf(&b, "  new storm: %s (%s, scope %s, %d members)\n", s.ID, s.Type, s.Scope, s.Members)
	}
	if len(d.Changes) == 0 {
		b.WriteString("no incident changes its route\n")
	} else {
		fmt.Fprintf(&b, "%d incidents change:\n", len(d.Changes))
		changes := slices.Clone(d.Changes)
		slices.SortStableFunc(changes, func(x, y Change) int { return cmp.Compare(x.Scope, y.Scope) })
		for _, c := range changes {
			fmt.Fprintf(&b, "  %s %s [%s]: %s -> %s\n", c.Incident, c.Name, c.Scope, describeRoute(c.Was), describeRoute(c.Now))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// delta says how a count changes: "1 storm -> 0 (1 fewer)".
func delta(was, now int, one, many string) string {
	noun := func(n int) string {
		if n == 1 {
			return one
		}
		return many
	}
	switch {
	case now == was:
		return fmt.Sprintf("%d %s (no change)", now, noun(now))
	case now < was:
		return fmt.Sprintf("%d %s -> %d (%d fewer)", was, noun(was), now, was-now)
	}
	return fmt.Sprintf("%d %s -> %d (%d more)", was, noun(was), now, now-was)
}

// WhatIf replays the selected signals through the deduper's and the
// aggregator's decisions with cfg and compares the outcome with what was
// recorded; settings name cfg's changes for the report.
func WhatIf(ctx context.Context, js jetstream.JetStream, prefix string, sel Selector, cfg config.Config, settings []string, progress Progress) (*Diff, error) {
	if err := CheckStreams(ctx, js, prefix); err != nil {
		return nil, err
	}
	rec, err := Recorded(ctx, js, prefix, sel, progress)
	if err != nil {
		return nil, err
	}
	sim := NewSimulator(ctx, cfg)
	if err := ReadStream(ctx, js, bus.ReviewStreams(prefix)[0], sel, progress, func(m *Msg) error {
		if len(sel.Matchers) > 0 {
			var sig signal.Signal
			if signal.Decode(m.Data, &sig) != nil || !sel.MatchLabels(SignalLabels(&sig)) {
				return nil
			}
		}
		return sim.Signal(m.Data)
	}); err != nil {
		return nil, err
	}
	out, err := sim.Finish(rec)
	if err != nil {
		return nil, err
	}
	return Compare(rec, out, settings), nil
}
