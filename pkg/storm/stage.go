package storm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
)

// StageName is the aggregator's durable consumer name, shared by its
// replicas, and its name in metrics, logs and the DLQ subject.
const StageName = bus.ConsumerAggregator

// sweepBatch bounds the storms one sweep closes; the rest wait for the
// next sweep.
const sweepBatch = 100

// Checker is implemented by stores with a dependency to probe (Redis);
// the stage adds it to readiness.
type Checker interface {
	Check(ctx context.Context) error
}

// Routes is what the aggregator needs of the incident records: to record
// each new incident's route, and to read the route of an update the
// deduper decided before the route was known.
type Routes interface {
	record.Router
	record.Reader
}

// ErrUnrouted is returned (transient) for an update of an incident whose
// new-incident event the aggregator has not processed yet: the update
// waits and comes back once the route is known.
var ErrUnrouted = errors.New("incident not routed by the aggregator yet")

// reasonUnrouted counts the retries of ErrUnrouted
// (stormweir_worker_retries_total): an update normally waits a delivery
// or two for its incident's first event; one that keeps waiting is a
// stage behind, or a lost route.
const reasonUnrouted = "unrouted"

// Metrics are the aggregator's own metrics.
type Metrics struct {
	Open     prometheus.Gauge
	Detected *prometheus.CounterVec
	Members  prometheus.Counter
	Closes   prometheus.Counter
	Dropped  prometheus.Counter
	Unrouted *prometheus.CounterVec
}

// NewMetrics registers the aggregator metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stormweir_storms_open",
			Help: "Storms not yet closed, over all replicas (read from the store at every sweep).",
		}),
		Detected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_storms_detected_total",
			Help: "Storms opened, by type (rate, pattern).",
		}, []string{"type"}),
		Members: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_storm_members_total",
			Help: "New incidents folded into a storm (the opening one included).",
		}),
		Closes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_storm_closes_total",
			Help: "Storm windows closed by this process.",
		}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_storm_member_updates_dropped_total",
			Help: "Member repeats for a storm the store no longer knows (expired long after its close); logged.",
		}),
		Unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_aggregator_unrouted_updates_total",
			Help: "Updates decided before their incident was routed, by what became of them: individual (forwarded to the writer), storm (counted on the storm), waiting (retried: the new incident is not routed yet), gone (the incident record ended or expired first; dropped).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.Open, m.Detected, m.Members, m.Closes, m.Dropped, m.Unrouted)
	return m
}

// Stage is the aggregator (DESIGN §4). Its worker reads new incidents,
// storm members' repeats and updates decided before their route from the
// durable "aggregator" consumer; its sweeper closes expired windows.
// Neither holds state between messages: every decision is in the storm
// Store and the incident route in the incident record, so replicas are
// interchangeable and a killed one loses nothing. It alone decides where
// an incident goes: the writer gets only individual incidents and storms.
type Stage struct {
	cfg       config.Aggregator
	storms    Store
	incidents Routes
	clk       clock.Clock
	scoper    *Scoper
	subj      bus.Subjects
	pub       *bus.Publisher
	worker    *bus.Worker
	m         *Metrics
	log       *slog.Logger
	// token identifies this replica's close claims; lease bounds how long
	// a claim stays exclusive, well inside the stream's duplicate window
	// so a close re-published after a crash is absorbed.
	token string
	lease time.Duration
	// co coalesces the storm events of concurrent decisions.
	co *coalescer
	// health is the stores as the decisions found them: a Redis that
	// answers PING but refuses writes (out of memory, a replica) makes
	// the stage unready, counted by reason and logged when it starts and
	// stops, as the deduper's.
	health *redisclient.StoreHealth
}

// New wires the aggregator on p: it creates or updates the durable
// consumer and registers metrics and readiness checks, but starts nothing
// until Run. storms keeps the windows, incidents the incident records
// (where each incident's route is recorded), clk the time source of every
// window decision.
func New(ctx context.Context, p *service.Process, storms Store, incidents Routes, clk clock.Clock) (*Stage, error) {
	cfg := p.Config
	scoper := NewScoper(cfg.Aggregator.Scope)
	subj := bus.NewSubjects(cfg.Bus.Prefix)
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	s := &Stage{
		cfg: cfg.Aggregator, storms: storms, incidents: incidents, clk: clk, scoper: scoper, subj: subj,
		pub: p.Publisher(), m: NewMetrics(p.Registry), log: p.Log.With("stage", StageName),
		token: hex.EncodeToString(tok[:]), lease: 3 * cfg.Bus.PublishTimeout, co: newCoalescer(clk),
		health: redisclient.NewStoreHealth(p.Registry, p.Log, StageName),
	}
	var err error
	s.worker, err = p.Worker(ctx, service.WorkerSpec{
		Consumer: bus.PipelineConsumer(subj, bus.ConsumerAggregator),
		Handler:  s,
		Span:     "storm decision",
	})
	if err != nil {
		return nil, err
	}
	if c, ok := storms.(Checker); ok {
		p.Health.AddCheck("storm-store", c.Check)
	}
	if c, ok := incidents.(record.Checker); ok {
		p.Health.AddCheck("record-store", c.Check)
	}
	p.Health.AddCheck("store-calls", s.health.Check)
	return s, nil
}

// Metrics returns the stage's metrics.
func (s *Stage) Metrics() *Metrics { return s.m }

// Run consumes and sweeps until ctx ends, then drains in-flight messages.
func (s *Stage) Run(ctx context.Context) error {
	return service.RunAll(ctx, s.worker, service.RunFunc(s.sweep))
}

// Handle routes one deduper event: a new incident is observed by the
// detectors, a storm member's repeat is counted on its storm, and an
// update decided before its incident was routed follows the route. Bad
// input is permanent (DLQ); a store error is transient, so the event waits
// and is retried: a Redis outage never turns a storm member into an
// individual incident. A storm event is coalesced with those of the
// decisions in flight beside it (see coalescer).
func (s *Stage) Handle(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
	out, err := s.handle(ctx, m)
	// A failure elsewhere (a publish, an update waiting for its route)
	// says nothing about the stores.
	if err == nil || redisclient.IsRedisError(err) {
		s.health.Observe(err)
	}
	return out, err
}

func (s *Stage) handle(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
	var ev incident.Event
	if err := incident.Unmarshal(m.Data, &ev); err != nil {
		return nil, bus.Permanent(fmt.Errorf("decoding incident event: %w", err))
	}
	if ev.IncidentID == "" || ev.Fingerprint == "" {
		return nil, bus.Permanent(fmt.Errorf("incident event without incident id or fingerprint (seq %d)", m.StreamSeq))
	}
	if (m.Subject == s.subj.DedupNew()) != (ev.Decision == incident.DecisionNew) {
		return nil, bus.Permanent(fmt.Errorf("incident %s: %q event on %s", ev.IncidentID, ev.Decision, m.Subject))
	}
	t := s.co.enter()
	defer s.co.release(t)
	switch m.Subject {
	case s.subj.DedupMember():
		return s.member(ctx, &ev, t)
	case s.subj.DedupUnrouted():
		return s.unrouted(ctx, m, &ev, t)
	}
	return s.newIncident(ctx, &ev, t)
}

// newIncident decides a new incident's fate. The rate detector goes first;
// an incident it leaves individual is shown to the pattern detector. Each
// store call is idempotent per incident id, and every output id derives
// from the incident or storm, so a redelivery at any point (the first
// attempt died after some of these steps) repeats the same decisions and
// republishes the same messages, which JetStream absorbs.
func (s *Stage) newIncident(ctx context.Context, ev *incident.Event, ticket uint64) ([]bus.Output, error) {
	now := s.clk.Now()
	var sig signal.Signal
	if err := signal.Decode(ev.Signal, &sig); err != nil {
		return nil, bus.Permanent(fmt.Errorf("incident %s: %w", ev.IncidentID, err))
	}
	count := max(ev.Count, 1)
	d, err := Detect(ctx, s.cfg, s.scoper, s.storms, ev, &sig, now)
	if err != nil {
		return nil, err
	}
	if !d.Replayed {
		switch d.Verdict {
		case Opened:
			s.m.Detected.WithLabelValues(string(d.Storm.Type)).Inc()
			s.m.Members.Inc()
			s.log.InfoContext(ctx, "storm opened", "storm", d.Storm.ID, "type", d.Storm.Type, "scope", FormatScope(d.Storm.Scope.Values),
				"incident", ev.IncidentID, "fingerprint", ev.Fingerprint)
		case Member:
			s.m.Members.Inc()
		}
	}
	if d.Verdict == Individual {
		return s.individual(ctx, ev)
	}
	return s.joined(ctx, ev, sig.Target, d, count, now, ticket)
}

// Detect shows a new incident ev (its signal decoded as sig) to the
// detectors of cfg at now: the rate detector first, then, for an incident
// it leaves individual, the pattern detector. It is the aggregator's
// decision on every new incident; a what-if replay (pkg/review) runs it on
// recorded incidents with an in-memory store and other settings.
func Detect(ctx context.Context, cfg config.Aggregator, scoper *Scoper, storms Store, ev *incident.Event, sig *signal.Signal, now time.Time) (Decision, error) {
	rate := scoper.Rate(sig)
	// Alertmanager's truncatedAlerts are alerts of the group that the
	// webhook left out: each one lowers the rate threshold, so a group too
	// large to send in full opens its storm at once.
	threshold := max(cfg.RateThreshold-sig.TruncatedAlerts, 0)
	// The signal goes to the store as the bytes received: a store keeps
	// it only when the observation opens a storm.
	obs := Observation{
		Type: incident.StormRate, Scope: rate, IncidentID: ev.IncidentID, Unit: ev.IncidentID,
		Target: sig.Target, Count: max(ev.Count, 1), Threshold: threshold, Window: cfg.RateWindow,
		Inactivity: cfg.InactivityTimeout, MaxDuration: cfg.MaxDuration, Signal: ev.Signal, Now: now,
	}
	d, err := storms.Observe(ctx, obs)
	if err != nil {
		return Decision{}, err
	}
	if d.Verdict == Individual && !scoper.ClusterWide() {
		// A pattern storm is one alertname in many scopes: its unit is
		// the rate scope, so many targets within one scope stay the rate
		// detector's business.
		obs.Type, obs.Scope, obs.Unit = incident.StormPattern, scoper.Pattern(sig), rate.Hash
		obs.Threshold, obs.Window = cfg.PatternThreshold, cfg.PatternWindow
		if d, err = storms.Observe(ctx, obs); err != nil {
			return Decision{}, err
		}
	}
	return d, nil
}

// individual records the route and forwards the incident to the writer.
// Repeats decided while the route was undecided are in the record the
// route was set on (see record.Router), so the event carries the record as
// it stands: absolute values, newer revision.
func (s *Stage) individual(ctx context.Context, ev *incident.Event) ([]bus.Output, error) {
	rec, err := s.incidents.SetRoute(ctx, ev.Fingerprint, ev.IncidentID, incident.RouteIndividual)
	switch {
	case errors.Is(err, record.ErrNotFound):
		// The incident ended or was replaced meanwhile; it was real, so
		// it is still forwarded as it was.
		s.log.WarnContext(ctx, "incident record gone before routing; forwarding as received", "incident", ev.IncidentID, "fingerprint", ev.Fingerprint)
	case err != nil:
		return nil, bus.Retry(fmt.Errorf("routing incident %s individually: %w", ev.IncidentID, err), bus.ReasonStore)
	default:
		record.Refresh(ev, &rec)
	}
	return s.toWriter(ev, s.subj.IncidentsOpen(), "open:"+ev.IncidentID)
}

// toWriter forwards an individual incident's event to the writer under
// msgID. The signal goes on as the bytes the deduper received.
func (s *Stage) toWriter(ev *incident.Event, subject, msgID string) ([]bus.Output, error) {
	ev.Route = incident.RouteIndividual
	data, err := incident.Marshal(ev)
	if err != nil {
		return nil, bus.Permanent(fmt.Errorf("encoding incident %s: %w", ev.IncidentID, err))
	}
	h := nats.Header{}
	h.Set(bus.HeaderFingerprint, ev.Fingerprint)
	h.Set(bus.HeaderIncident, ev.IncidentID)
	return []bus.Output{{Subject: subject, Data: data, MsgID: msgID, Header: h}}, nil
}

// unrouted routes an update the deduper decided before the aggregator had
// routed its incident, as the deduper would have, had it known the route:
// an individual incident's update goes to the writer, a storm member's is
// counted on its storm. While the route is still undecided (the incident's
// new event is not processed yet, or waits for a retry) the update waits
// too. The output's msg-id derives from the input's, so a redelivery
// republishes the same message.
func (s *Stage) unrouted(ctx context.Context, m *bus.Msg, ev *incident.Event, ticket uint64) ([]bus.Output, error) {
	rec, err := s.incidents.Get(ctx, ev.Fingerprint)
	switch {
	case errors.Is(err, record.ErrNotFound) || err == nil && rec.IncidentID != ev.IncidentID:
		// The incident expired or ended (or another replaced it) before
		// it was routed, or since: its route is unknown, and what the
		// update counted is either in the event the route was decided
		// with or of an incident that is over.
		s.m.Unrouted.WithLabelValues("gone").Inc()
		s.log.InfoContext(ctx, "update of an incident whose record is gone; nothing to route", "incident", ev.IncidentID, "fingerprint", ev.Fingerprint)
		return nil, nil
	case err != nil:
		return nil, bus.Retry(fmt.Errorf("reading the route of incident %s: %w", ev.IncidentID, err), bus.ReasonStore)
	case rec.Route == incident.RouteUndecided:
		s.m.Unrouted.WithLabelValues("waiting").Inc()
		return nil, bus.Retry(fmt.Errorf("update of incident %s: %w", ev.IncidentID, ErrUnrouted), reasonUnrouted)
	}
	record.Refresh(ev, &rec)
	if rec.Route == incident.RouteIndividual {
		s.m.Unrouted.WithLabelValues("individual").Inc()
		return s.toWriter(ev, s.subj.IncidentsUpdate(), "routed:"+m.MsgID())
	}
	s.m.Unrouted.WithLabelValues("storm").Inc()
	ev.Route = rec.Route
	return s.member(ctx, ev, ticket)
}

// joined points the member's fingerprint at its storm, so its repeats
// count there, catches up on occurrences counted before the route was
// set, and publishes the storm: the opening incident its own opened event,
// a member the newest revision in flight.
func (s *Stage) joined(ctx context.Context, ev *incident.Event, target signal.Target, d Decision, count int64, now time.Time, ticket uint64) ([]bus.Output, error) {
	snap := d.Storm
	rec, err := s.incidents.SetRoute(ctx, ev.Fingerprint, ev.IncidentID, snap.ID)
	switch {
	case errors.Is(err, record.ErrNotFound):
		s.log.WarnContext(ctx, "incident record gone before routing to its storm", "incident", ev.IncidentID, "storm", snap.ID)
	case err != nil:
		return nil, bus.Retry(fmt.Errorf("routing incident %s to storm %s: %w", ev.IncidentID, snap.ID, err), bus.ReasonStore)
	case rec.Count > count:
		if snap, err = s.storms.Track(ctx, MemberUpdate{StormID: snap.ID, IncidentID: ev.IncidentID, Target: target, Count: rec.Count, Now: now}); err != nil {
			return nil, err
		}
	}
	upTo := s.co.done(ticket, &snap)
	// The storm events count members; which incident joined which storm
	// is recorded for review (one record per member, absorbed on
	// redelivery by its msg-id).
	routed, err := bus.AuditOutput(s.subj, StageName, &incident.Audit{
		Kind: incident.AuditRouted, Time: now, IncidentID: ev.IncidentID, Fingerprint: ev.Fingerprint,
		StormID: snap.ID, StormType: snap.Type, Opened: d.Verdict == Opened,
	}, "routed:"+ev.IncidentID)
	if err != nil {
		return nil, err
	}
	if d.Verdict == Opened {
		out, err := s.stormOutput(&snap, incident.StormOpened)
		if err != nil {
			return nil, err
		}
		return []bus.Output{out, routed}, nil
	}
	outs, err := s.coalesced(ctx, &snap, upTo)
	if err != nil {
		return nil, err
	}
	return append(outs, routed), nil
}

// coalesced waits for the decisions in flight beside this one and returns
// the storm's newest updated event among them.
func (s *Stage) coalesced(ctx context.Context, snap *Snapshot, upTo uint64) ([]bus.Output, error) {
	s.co.wait(ctx, upTo)
	out, err := s.co.output(snap, func(sn *Snapshot) (bus.Output, error) { return s.stormOutput(sn, incident.StormUpdated) })
	if err != nil {
		return nil, err
	}
	return []bus.Output{out}, nil
}

// member counts a storm member's repeat (absolute count) on its storm.
// Of the signal it reads only the head (the target).
func (s *Stage) member(ctx context.Context, ev *incident.Event, ticket uint64) ([]bus.Output, error) {
	if _, err := tagOf(ev.Route); err != nil {
		return nil, bus.Permanent(fmt.Errorf("member event of incident %s: route: %w", ev.IncidentID, err))
	}
	var sig signal.Head
	if err := signal.DecodeHead(ev.Signal, &sig); err != nil {
		return nil, bus.Permanent(fmt.Errorf("member event of incident %s: %w", ev.IncidentID, err))
	}
	snap, err := s.storms.Track(ctx, MemberUpdate{StormID: ev.Route, IncidentID: ev.IncidentID, Target: sig.Target, Count: ev.Count, Now: s.clk.Now()})
	if errors.Is(err, ErrNotFound) {
		s.m.Dropped.Inc()
		s.log.WarnContext(ctx, "repeat of a member of an unknown storm dropped", "storm", ev.Route, "incident", ev.IncidentID, "fingerprint", ev.Fingerprint, "count", ev.Count)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.coalesced(ctx, &snap, s.co.done(ticket, &snap))
}

// stormOutput builds a storm event. Its msg-id names the storm, phase
// and revision: a revision is one state of the storm, so any replica
// publishing it again is absorbed by JetStream. The close is the exception:
// it is published once per storm, so its id is "storm:<id>:closed".
func (s *Stage) stormOutput(snap *Snapshot, phase incident.StormPhase) (bus.Output, error) {
	ev := snap.Event(phase)
	data, err := incident.Marshal(&ev)
	if err != nil {
		return bus.Output{}, bus.Permanent(fmt.Errorf("encoding storm %s: %w", snap.ID, err))
	}
	id := "storm:" + snap.ID + ":" + string(phase)
	if phase != incident.StormClosed {
		id += ":" + strconv.FormatInt(snap.Revision, 10)
	}
	h := nats.Header{}
	h.Set(bus.HeaderFingerprint, snap.Scope.Hash)
	h.Set(bus.HeaderIncident, snap.ID)
	return bus.Output{Subject: s.subj.IncidentsStorm(), Data: data, MsgID: id, Header: h}, nil
}

// sweep closes expired windows every SweepInterval of the stage's clock.
// Every replica sweeps; the store's claim lets one of them close each
// storm. The timer is re-armed only after a sweep has finished, so with a
// fake clock a test knows a sweep is done when the timer is armed again.
func (s *Stage) sweep(ctx context.Context) error {
	var t clock.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("storm sweep failed; retrying at the next one", "err", err)
		}
		if t == nil {
			t = s.clk.NewTimer(s.cfg.SweepInterval)
		} else {
			t.Reset(s.cfg.SweepInterval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// SweepOnce closes the windows that have ended by now: claim, publish the
// close, finish. A crash after the claim leaves the storm closing; once the
// lease runs out another replica claims it and publishes the same close
// (same id, same content), which JetStream absorbs if the first publish
// had got through.
func (s *Stage) SweepOnce(ctx context.Context) error {
	now := s.clk.Now()
	ids, err := s.storms.Due(ctx, now, sweepBatch)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := s.close(ctx, id, now); err != nil {
			errs = append(errs, err)
		}
	}
	if n, err := s.storms.Open(ctx); err == nil {
		s.m.Open.Set(float64(n))
	}
	return errors.Join(errs...)
}

func (s *Stage) close(ctx context.Context, id string, now time.Time) error {
	c, err := s.storms.Claim(ctx, id, s.token, s.lease, now)
	if err != nil || c.Status != Claimed {
		return err
	}
	out, err := s.stormOutput(&c.Storm, incident.StormClosed)
	if err != nil {
		return err
	}
	if _, err := s.pub.Publish(ctx, out); err != nil {
		return fmt.Errorf("publishing close of storm %s: %w", id, err)
	}
	ok, err := s.storms.Finish(ctx, id, s.token)
	if err != nil {
		return err
	}
	if ok {
		s.m.Closes.Inc()
		s.log.Info("storm closed", "storm", id, "members", c.Storm.Members, "occurrences", c.Storm.Occurrences,
			"affected", c.Storm.AffectedTotal, "closedAt", c.Storm.ClosedAt)
	}
	return nil
}
