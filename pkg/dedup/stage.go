// Package dedup is the deduper stage (DESIGN §3): for every signal it
// decides, in the incident record of the signal's fingerprint
// (pkg/record), whether it opens an incident, repeats one, resolves or
// reopens it, and publishes the incident event where the incident's route
// sends it.
package dedup

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
)

// StageName is the deduper's durable consumer name, shared by its
// replicas, and its name in metrics, logs and the DLQ subject.
const StageName = bus.ConsumerDeduper

// Metrics are the deduper's own metrics.
type Metrics struct {
	Decisions *prometheus.CounterVec
	Store     prometheus.Histogram
	Batch     prometheus.Histogram
	Errors    prometheus.Counter
}

// NewMetrics registers the deduper metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_dedup_decisions_total",
			Help: "Dedup decisions by kind (new, occurrence, resolved, reopened, resolved_unknown, duplicate = a redelivered message).",
		}, []string{"decision"}),
		Store: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stormweir_dedup_redis_seconds",
			Help:    "Time of one batch of dedup decisions in the store (one Redis pipeline of script calls).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 14),
		}),
		Batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stormweir_dedup_batch_signals",
			Help:    "Signals decided together in one batch (one Redis pipeline); their events are coalesced per incident.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stormweir_dedup_errors_total",
			Help: "Dedup decisions that failed in the store; the signal waits and is retried.",
		}),
	}
	reg.MustRegister(m.Decisions, m.Store, m.Batch, m.Errors)
	return m
}

// Stage is the deduper (DESIGN §3): it reads signals from the durable
// "deduper" consumer, decides on each in the record store, and publishes the
// incident event. The worker loop acks a signal only after its event is
// stored in JetStream; a failure anywhere before leaves the signal to be
// redelivered, and the store's seen mark makes the redelivery count once.
type Stage struct {
	store  record.Decider
	subj   bus.Subjects
	worker *bus.Worker
	batch  *batcher
	m      *Metrics
	// health is the store as the decisions found it: a Redis that
	// answers PING but rejects writes (OOM, a read-only replica after
	// failover) makes the stage unready, is counted by reason and logged
	// when it starts and stops.
	health *redisclient.StoreHealth
}

// New wires the deduper on p with store: it creates or updates the
// durable consumer and registers metrics and readiness checks, but starts
// nothing until Run. Several Stages (replicas) may share one consumer.
func New(ctx context.Context, p *service.Process, store record.Decider) (*Stage, error) {
	subj := bus.NewSubjects(p.Config.Bus.Prefix)
	s := &Stage{store: store, subj: subj, m: NewMetrics(p.Registry), health: redisclient.NewStoreHealth(p.Registry, p.Log, StageName)}
	s.batch = newBatcher(s.decide, s.output)
	var err error
	s.worker, err = p.Worker(ctx, service.WorkerSpec{
		Consumer: bus.PipelineConsumer(subj, bus.ConsumerDeduper),
		Handler:  s,
		Span:     "dedup decision",
	})
	if err != nil {
		return nil, err
	}
	p.Health.AddCheck("dedup-store", s.checkStore)
	return s, nil
}

// checkStore is the store's readiness: reachable, and its last decision
// did not fail.
func (s *Stage) checkStore(ctx context.Context) error {
	if c, ok := s.store.(record.Checker); ok {
		if err := c.Check(ctx); err != nil {
			return err
		}
	}
	return s.health.Check(ctx)
}

// Metrics returns the stage's metrics.
func (s *Stage) Metrics() *Metrics { return s.m }

// Run consumes until ctx ends, then drains in-flight signals.
func (s *Stage) Run(ctx context.Context) error { return s.worker.Run(ctx) }

// Handle decides on one signal and returns its incident event. It reads
// only the signal's head; the event carries the signal on as the bytes
// received. Bad input is permanent (DLQ); a store error is transient and
// returned as is, so the signal is Nak'ed and waits: a store failure never
// becomes a new incident.
func (s *Stage) Handle(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
	var sig signal.Head
	if err := signal.DecodeHead(m.Data, &sig); err != nil {
		return nil, bus.Permanent(err)
	}
	if err := record.CheckSignal(&sig); err != nil {
		return nil, bus.Permanent(fmt.Errorf("invalid signal %s: %w", sig.ID, err))
	}
	c := &call{sig: &sig, msgID: m.MsgID(), in: m}
	if err := s.batch.run(ctx, c); err != nil {
		return nil, fmt.Errorf("deciding on signal %s: %w", c.msgID, err)
	}
	if c.err != nil && !bus.IsPermanent(c.err) {
		// The store failed the decision (Redis down, full, failing over).
		return nil, bus.Retry(fmt.Errorf("deciding on signal %s: %w", c.msgID, c.err), bus.ReasonStore)
	}
	if c.err != nil {
		return nil, c.err
	}
	if !c.ok {
		return nil, nil
	}
	return []bus.Output{c.out}, nil
}

// decide decides a batch in the store: in one call when the store
// decides batches, else one signal after another. It counts the
// decisions and keeps the store's health.
func (s *Stage) decide(ctx context.Context, reqs []record.DecideRequest) []record.DecideResponse {
	start := time.Now()
	var resps []record.DecideResponse
	if b, ok := s.store.(record.BatchDecider); ok {
		resps = b.DecideBatch(ctx, reqs)
	} else {
		resps = make([]record.DecideResponse, len(reqs))
		for i, r := range reqs {
			resps[i].Result, resps[i].Err = s.store.Decide(ctx, r.Sig, r.MsgID)
		}
	}
	s.m.Store.Observe(time.Since(start).Seconds())
	s.m.Batch.Observe(float64(len(reqs)))
	var failed error
	for i, r := range resps {
		if r.Err != nil {
			s.m.Errors.Inc()
			s.health.Observe(r.Err)
			failed = r.Err
			resps[i].Err = fmt.Errorf("deciding on signal %s: %w", reqs[i].MsgID, r.Err)
			continue
		}
		if r.Result.Duplicate {
			s.m.Decisions.WithLabelValues(string(incident.DecisionDuplicate)).Inc()
		} else {
			s.m.Decisions.WithLabelValues(string(r.Result.Decision)).Inc()
		}
	}
	if failed == nil {
		s.health.Observe(nil)
	}
	return resps
}

// output builds the event for c's decision. A redelivered message
// republishes its event under the same msg-id (the first attempt may
// have died between the store write and the publish), carrying the
// record as it stands now: values are absolute and revisioned, so a newer
// state is never wrong. The event carries its signal's receipt time, so
// the event that covers a batch's decisions (see batcher) carries its
// own signal's.
func (s *Stage) output(c *call) (bus.Output, bool, error) {
	res := &c.res
	r := &res.Record
	if res.Decision == incident.DecisionResolvedUnknown || r.IncidentID == "" {
		return bus.Output{}, false, nil
	}
	ev := incident.Event{Decision: res.Decision, Signal: c.in.Data}
	record.Refresh(&ev, r)
	data, err := incident.Marshal(&ev)
	if err != nil {
		return bus.Output{}, false, bus.Permanent(fmt.Errorf("encoding incident event %s: %w", r.IncidentID, err))
	}
	h := nats.Header{}
	h.Set(bus.HeaderFingerprint, r.Fingerprint)
	h.Set(bus.HeaderIncident, r.IncidentID)
	if rcv := c.in.Header.Get(bus.HeaderReceivedAt); rcv != "" {
		h.Set(bus.HeaderReceivedAt, rcv)
	}
	return bus.Output{Subject: s.subject(*res), Data: data, MsgID: OutputMsgID(c.msgID), Header: h}, true, nil
}

// subject sends an event where the incident's route says: new incidents
// to the aggregator, which routes them; updates of an individual incident
// to the writer; updates of a storm member to the aggregator, which counts
// them on the storm; and updates of an incident not routed yet to the
// aggregator as well, which routes them once it has routed the incident.
func (s *Stage) subject(res record.Result) string {
	switch route := res.Record.Route; {
	case res.Decision == incident.DecisionNew:
		return s.subj.DedupNew()
	case route == incident.RouteIndividual:
		return s.subj.IncidentsUpdate()
	case route == incident.RouteUndecided:
		return s.subj.DedupUnrouted()
	default:
		return s.subj.DedupMember()
	}
}

// OutputMsgID is the msg-id of the event published for input msgID:
// derived from it, so a redelivered signal republishes the same id and
// JetStream's duplicate window absorbs the copy.
func OutputMsgID(msgID string) string { return "d:" + msgID }
