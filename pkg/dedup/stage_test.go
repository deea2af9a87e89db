package dedup_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/record/recordtest"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// localStore returns a RedisStore on the machine's Redis under a prefix of
// the test's own.
func localStore(t testing.TB, clk clock.Clock) *record.RedisStore {
	t.Helper()
	r := testenv.LocalRedis(t)
	c, err := redisclient.New(redisConfig(r.Addr))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return record.NewRedisStore(c, r.Prefix, recordtest.Config, clk)
}

func TestStage_twoReplicasCountExactly(t *testing.T) {
	const signals, fps = 10_000, 100
	p := newPipeline(t)
	store := localStore(t, clock.Real{})
	// Two replicas, 25 concurrent handlers each, on one durable consumer.
	a, b := p.start(t, store), p.start(t, store)

	p.publish(t, firingSignals("storm", signals, fps)...)
	p.waitSettled(t, signals, 2*time.Minute)

	total, found := sumCounts(t, store, "storm", fps)
	assert.Equal(t, fps, found)
	assert.EqualValues(t, signals, total, "every signal counted once")
	subj := p.subjectCounts(t, bus.StreamIncidents)
	assert.EqualValues(t, fps, subj[p.subj.DedupNew()], "exactly one new incident per fingerprint")
	assert.LessOrEqual(t, subj[p.subj.DedupUnrouted()], uint64(signals-fps), "no aggregator routes them here; decisions taken together publish one event")
	assertNewestPublished(t, p, store, "storm", fps)
	// The store's counts above are the exact ones. The decision metrics
	// are exact too unless a reply from Redis was lost after it applied a
	// batch (a timeout on a loaded machine): the retry then finds the
	// signals seen and counts them as duplicates, never as a second
	// decision.
	dups := a.decisions(incident.DecisionDuplicate) + b.decisions(incident.DecisionDuplicate)
	news := a.decisions(incident.DecisionNew) + b.decisions(incident.DecisionNew)
	occs := a.decisions(incident.DecisionOccurrence) + b.decisions(incident.DecisionOccurrence)
	assert.LessOrEqual(t, news, fps, "no incident opened twice")
	assert.LessOrEqual(t, occs, signals-fps, "no repeat decided twice")
	assert.GreaterOrEqual(t, news+occs+dups, signals, "every signal decided")
	if dups == 0 {
		assert.Equal(t, fps, news)
		assert.Equal(t, signals-fps, occs)
	}
	assert.Positive(t, a.decisions(incident.DecisionOccurrence), "replica a took part")
	assert.Positive(t, b.decisions(incident.DecisionOccurrence), "replica b took part")
	assert.Empty(t, p.subjectCounts(t, bus.StreamDLQ))
}

// crashingStore applies a decision and then "dies" before the handler can
// return: it closes the replica's bus connection, so neither the output
// nor the ack ever leaves, as with a kill -9 between the Redis write and
// the ack.
type crashingStore struct {
	record.Store
	crash   func()
	once    sync.Once
	crashed chan struct{}
}

func (c *crashingStore) Decide(ctx context.Context, sig *signal.Head, msgID string) (record.Result, error) {
	res, err := c.Store.Decide(ctx, sig, msgID)
	if err != nil {
		return res, err
	}
	fired := false
	c.once.Do(func() { c.crash(); close(c.crashed); fired = true })
	if fired {
		return record.Result{}, errors.New("process killed")
	}
	<-c.crashed
	return record.Result{}, errors.New("process killed")
}

func TestStage_crashAfterStoreWriteCountsOnce(t *testing.T) {
	p := newPipeline(t)
	store := localStore(t, clock.Real{})
	fp := fingerprint("crash", 0)
	cs := &crashingStore{Store: store, crashed: make(chan struct{})}
	victim := p.start(t, cs)
	cs.crash = func() { victim.app.Process.Bus.NC.Close() }

	p.publish(t, testSignal(fp, "crash-1", signal.StatusFiring))
	select {
	case <-cs.crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("the first delivery never reached the store")
	}
	rec, err := store.Get(context.Background(), fp)
	require.NoError(t, err, "the decision was written before the crash")
	require.EqualValues(t, 1, rec.Count)
	require.Empty(t, p.subjectCounts(t, bus.StreamIncidents), "the crash came before the publish")

	// A healthy replica gets the signal after AckWait and recognises it.
	survivor := p.start(t, store)
	p.publish(t, testSignal(fp, "crash-2", signal.StatusFiring))
	p.waitSettled(t, 2, 30*time.Second)

	rec, err = store.Get(context.Background(), fp)
	require.NoError(t, err)
	assert.EqualValues(t, 2, rec.Count, "the redelivered signal counted once")
	assert.Equal(t, 1, survivor.decisions(incident.DecisionDuplicate))
	evs := p.events(t)
	require.Len(t, evs, 2, "the lost output was republished, once")
	byID := map[string]published{}
	for _, e := range evs {
		byID[e.MsgID] = e
	}
	first, ok := byID[dedup.OutputMsgID("crash-1")]
	require.True(t, ok, "the crashed signal's event, under its deterministic msg-id")
	assert.Equal(t, p.subj.DedupNew(), first.Subject)
	assert.Equal(t, incident.DecisionNew, first.Event.Decision)
	assert.Equal(t, rec.IncidentID, first.Event.IncidentID)
	second := byID[dedup.OutputMsgID("crash-2")]
	assert.Equal(t, incident.DecisionOccurrence, second.Event.Decision)
	assert.EqualValues(t, 2, second.Event.Count)
}

// TestStage_timeline follows one fingerprint through the deduper with a
// fake clock: new, an unrouted repeat, window expiry, an individual route,
// resolve, reopen, a storm route, a resolve with nothing open, and a
// poison message.
func TestStage_timeline(t *testing.T) {
	p := newPipeline(t)
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	store := localStore(t, clk)
	p.start(t, store)
	fp := fingerprint("timeline", 0)
	window := recordtest.Config.Window

	n := uint64(0)
	sent := map[string][]byte{}
	step := func(id string, st signal.Status, advance time.Duration) {
		t.Helper()
		clk.Advance(advance)
		sig := testSignal(fp, id, st)
		sig.ReceivedAt = clk.Now()
		data, err := signal.Encode(sig)
		require.NoError(t, err)
		sent[id] = data
		p.publish(t, sig)
		n++
		p.waitSettled(t, n, 20*time.Second)
	}
	step("t0-fire", signal.StatusFiring, 0)                  // new
	step("t1-fire", signal.StatusFiring, window-time.Second) // occurrence, inside the window
	step("t2-fire", signal.StatusFiring, window)             // window expired: a new incident
	rec, err := store.Get(context.Background(), fp)
	require.NoError(t, err)
	_, err = store.SetRoute(context.Background(), fp, rec.IncidentID, incident.RouteIndividual)
	require.NoError(t, err)
	step("t3-resolve", signal.StatusResolved, time.Minute) // resolved
	step("t4-fire", signal.StatusFiring, 8*time.Minute)    // reopened within the reopen window
	_, err = store.SetRoute(context.Background(), fp, rec.IncidentID, "istorm000000000000001")
	require.NoError(t, err)
	step("t5-fire", signal.StatusFiring, time.Second)                                         // a storm member's repeat
	step("t6-resolve-other", signal.StatusResolved, 0)                                        // resolved: goes to the storm too
	p.publish(t, testSignal(fingerprint("timeline", 1), "t7-unknown", signal.StatusResolved)) // nothing open: no output
	n++
	p.waitSettled(t, n, 20*time.Second)
	_, err = p.pub.Publish(context.Background(), bus.Output{Subject: p.subj.Signals(signal.SourceAlertmanager), MsgID: "t8-poison", Data: []byte("{not json")})
	require.NoError(t, err)
	n++
	p.waitSettled(t, n, 20*time.Second)

	evs := p.events(t)
	require.Len(t, evs, 7)
	want := []struct {
		subject  string
		decision incident.Decision
		count    int64
		flaps    int64
		rev      int64
	}{
		{p.subj.DedupNew(), incident.DecisionNew, 1, 0, 1},
		{p.subj.DedupUnrouted(), incident.DecisionOccurrence, 2, 0, 2},
		{p.subj.DedupNew(), incident.DecisionNew, 1, 0, 1},
		{p.subj.IncidentsUpdate(), incident.DecisionResolved, 1, 0, 2},
		{p.subj.IncidentsUpdate(), incident.DecisionReopened, 2, 1, 3},
		{p.subj.DedupMember(), incident.DecisionOccurrence, 3, 1, 4},
		{p.subj.DedupMember(), incident.DecisionResolved, 3, 1, 5},
	}
	for i, w := range want {
		e := evs[i]
		assert.Equal(t, w.subject, e.Subject, "event %d subject", i)
		assert.Equal(t, w.decision, e.Event.Decision, "event %d decision", i)
		assert.Equal(t, w.count, e.Event.Count, "event %d count", i)
		assert.Equal(t, w.flaps, e.Event.Flaps, "event %d flaps", i)
		assert.Equal(t, w.rev, e.Event.Revision, "event %d revision", i)
		assert.Equal(t, fp, e.Event.Fingerprint)
	}
	assert.Equal(t, evs[0].Event.IncidentID, evs[1].Event.IncidentID)
	assert.NotEqual(t, evs[0].Event.IncidentID, evs[2].Event.IncidentID, "expiry opened another incident")
	for _, e := range evs[3:] {
		assert.Equal(t, evs[2].Event.IncidentID, e.Event.IncidentID, "resolve and reopen keep the incident")
	}
	assert.Equal(t, incident.RouteUndecided, evs[1].Event.Route)
	assert.Equal(t, incident.RouteIndividual, evs[3].Event.Route)
	assert.Equal(t, "istorm000000000000001", evs[5].Event.Route)
	for i, id := range []string{"t0-fire", "t1-fire", "t2-fire", "t3-resolve", "t4-fire", "t5-fire", "t6-resolve-other"} {
		assert.Equal(t, string(sent[id]), string(evs[i].Event.Signal), "event %d carries its signal as the bytes received", i)
	}
	assert.Equal(t, dedup.OutputMsgID("t0-fire"), evs[0].MsgID)
	assert.True(t, evs[4].Event.LastSeen.Equal(clk.Now().Add(-time.Second)))
	assert.Equal(t, uint64(1), p.subjectCounts(t, bus.StreamDLQ)[p.subj.DLQ(dedup.StageName)], "the poison message is dead-lettered")
}
