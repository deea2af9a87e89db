package storm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/test/testenv"
)

// pipeline runs the deduper and the aggregator in one process against an
// in-process JetStream and the machine's Redis, both driven by a fake
// clock: signals go in on <prefix>.signals.alertmanager, the test reads
// what the aggregator stored on incidents.open and incidents.storm. The
// aggregator's sweeper runs on the fake clock too: it sweeps once each
// time the clock moves.
type pipeline struct {
	t     testing.TB
	cfg   config.Config
	clk   *clock.Fake
	subj  bus.Subjects
	nats  *testenv.NATS
	conn  *bus.Conn
	pub   *bus.Publisher
	fp    *signal.Fingerprinter
	redis *testenv.Redis
	// incidents is the incident record store both stages share.
	incidents record.Store
	agg       *storm.Stage
	// health serves the process's /readyz and /metrics.
	health string
	seq    int
	// stop ends the stages and closes their process.
	stop func()
}

// newPipeline starts both stages with the aggregator settings tune sets.
func newPipeline(t testing.TB, tune func(*config.Aggregator)) *pipeline {
	t.Helper()
	p := preparePipeline(t, tune)
	p.start()
	return p
}

// preparePipeline sets up what the stages run against (NATS, Redis, the
// test's client, the clock) without starting them.
func preparePipeline(t testing.TB, tune func(*config.Aggregator)) *pipeline {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL)
	// Fake time: every move of the clock by 1ms or more fires a sweep.
	cfg.Aggregator.SweepInterval = time.Millisecond
	if tune != nil {
		tune(&cfg.Aggregator)
	}
	r := testenv.LocalRedis(t)
	cfg.Redis.KeyPrefix = r.Prefix
	require.NoError(t, cfg.Validate())
	conn, err := bus.Connect(cfg.Bus, "storm-test-client", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	pub := bus.NewPublisher(conn.JS, 10*time.Second)
	t.Cleanup(pub.Close)
	return &pipeline{
		t: t, cfg: cfg, clk: clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)),
		subj: bus.NewSubjects(cfg.Bus.Prefix), nats: n, conn: conn,
		pub: pub, fp: signal.MustFingerprinter(signal.DefaultFingerprintFields), redis: r,
	}
}

// start runs the deduper and the aggregator in one process, as
// `stormweir run` has them, on the fake clock, until stop or the test's
// end.
func (p *pipeline) start() {
	t := p.t
	t.Helper()
	ctx := context.Background()
	a, err := app.New(ctx, p.cfg, slog.New(slog.DiscardHandler), "pipeline", app.Options{Clock: p.clk, Redis: p.redis.Client})
	require.NoError(t, err)
	ded, err := a.Deduper(ctx)
	require.NoError(t, err)
	p.agg, err = a.Aggregator(ctx)
	require.NoError(t, err)
	p.incidents, err = a.Incidents()
	require.NoError(t, err)
	// Bound before Run, which would bind one of its own.
	p.health, err = a.HealthAddr()
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx, ded, p.agg) }()
	p.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stages stopped with: %v", err)
		}
		a.Close()
	})
	t.Cleanup(p.stop)
}

// alert is one firing alert of the test.
type alert struct {
	name, namespace string
	target          signal.Target
	truncated       int
}

func pod(name, ns, p string) alert {
	return alert{name: name, namespace: ns, target: signal.Target{Kind: "Pod", Name: p, Namespace: ns}}
}

func (p *pipeline) signal(a alert) *signal.Signal {
	p.seq++
	s := &signal.Signal{
		ID: fmt.Sprintf("sig-%d", p.seq), Source: signal.SourceAlertmanager, Name: a.name, Status: signal.StatusFiring,
		Severity: signal.SeverityWarning, Namespace: a.namespace, Target: a.target,
		Labels:   map[string]string{"alertname": a.name, "namespace": a.namespace},
		StartsAt: p.clk.Now(), ReceivedAt: p.clk.Now(), TruncatedAlerts: a.truncated,
	}
	s.Fingerprint = p.fp.Fingerprint(s)
	return s
}

// send publishes one signal per alert, advancing the fake clock by step
// before each.
func (p *pipeline) send(step time.Duration, alerts ...alert) {
	p.t.Helper()
	outs := make([]bus.Output, 0, len(alerts))
	for _, a := range alerts {
		p.clk.Advance(step)
		s := p.signal(a)
		data, err := signal.Encode(s)
		require.NoError(p.t, err)
		outs = append(outs, bus.Output{Subject: p.subj.Signals(s.Source), Data: data, MsgID: s.ID})
	}
	for len(outs) > 0 {
		n := min(len(outs), 256)
		_, err := p.pub.Publish(context.Background(), outs[:n]...)
		require.NoError(p.t, err)
		outs = outs[n:]
	}
}

// settle sends alerts one at a time, each handled by both stages before
// the next is sent, so the fake clock reads the intended instant at every
// decision.
func (p *pipeline) settle(step time.Duration, alerts ...alert) {
	p.t.Helper()
	for _, a := range alerts {
		p.send(step, a)
		p.waitIdle()
	}
}

// waitIdle waits until both stages have acked everything sent so far:
// the deduper every signal, then the aggregator every event the deduper
// published for them.
func (p *pipeline) waitIdle() {
	p.t.Helper()
	testenv.WaitAcked(p.t, p.conn.JS, p.subj.StreamName(bus.StreamSignals), app.Deduper, 20*time.Second)
	testenv.WaitAcked(p.t, p.conn.JS, p.subj.StreamName(bus.StreamIncidents), app.Aggregator, 20*time.Second,
		p.subj.DedupNew(), p.subj.DedupMember(), p.subj.DedupUnrouted())
}

// advance moves the fake clock by d once the pipeline is idle, and waits
// until the sweep that the move fires has finished: the sweeper is the
// only timer armed while nothing is handled, and it re-arms only after a
// sweep.
func (p *pipeline) advance(d time.Duration) {
	p.t.Helper()
	p.waitIdle()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(p.t, p.clk.BlockUntil(ctx, 1), "the sweeper waits for its next sweep")
	p.clk.Advance(d)
	require.NoError(p.t, p.clk.BlockUntil(ctx, 1), "the sweep fired by the move has finished")
}

// outputs is what the aggregator stored for the writer.
type outputs struct {
	open   []incident.Event
	storms []incident.Storm
}

// read returns every message stored on incidents.open and incidents.storm.
func (p *pipeline) read() outputs {
	p.t.Helper()
	return readOutputs(p.t, p.conn.JS, p.subj)
}

func readOutputs(t testing.TB, js jetstream.JetStream, subj bus.Subjects) outputs {
	t.Helper()
	var out outputs
	for _, m := range testenv.ReadArchived(t, js, subj.StreamName(bus.StreamIncidents), subj.IncidentsOpen(), subj.IncidentsStorm()) {
		if m.Subject == subj.IncidentsOpen() {
			var ev incident.Event
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			out.open = append(out.open, ev)
			continue
		}
		var st incident.Storm
		require.NoError(t, json.Unmarshal(m.Data, &st))
		out.storms = append(out.storms, st)
	}
	return out
}

// latest returns the highest revision of each storm, as a writer keeping
// the newest state would hold it.
func (o outputs) latest() map[string]incident.Storm {
	m := map[string]incident.Storm{}
	for _, s := range o.storms {
		if cur, ok := m[s.StormID]; !ok || s.Revision > cur.Revision {
			m[s.StormID] = s
		}
	}
	return m
}

// closes counts close events per storm.
func (o outputs) closes() map[string]int {
	m := map[string]int{}
	for _, s := range o.storms {
		if s.Phase == incident.StormClosed {
			m[s.StormID]++
		}
	}
	return m
}

// sig decodes the signal an event carries.
func sig(t testing.TB, raw []byte) signal.Signal {
	t.Helper()
	var s signal.Signal
	require.NoError(t, signal.Decode(raw, &s))
	return s
}

// openIDs returns the distinct incident ids forwarded as individual.
func (o outputs) openIDs() map[string]incident.Event {
	m := map[string]incident.Event{}
	for _, e := range o.open {
		m[e.IncidentID] = e
	}
	return m
}
