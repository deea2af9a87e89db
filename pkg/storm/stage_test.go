package storm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
)

func pods(name, ns string, from, n int) []alert {
	out := make([]alert, n)
	for i := range out {
		out[i] = pod(name, ns, fmt.Sprintf("pod-%d", from+i))
	}
	return out
}

func onlyStorm(t testing.TB, o outputs) incident.Storm {
	t.Helper()
	l := o.latest()
	require.Len(t, l, 1, "storms")
	for _, s := range l {
		return s
	}
	return incident.Storm{}
}

func TestStage_rateStormOf200PodsIsTenIndividualsAndOneStorm(t *testing.T) {
	p := newPipeline(t, nil) // threshold 10 in 60s
	// t=0..5s: 200 alerts for 200 pods of one alertname in one namespace.
	p.send(25*time.Millisecond, pods("KubePodCrashLooping", "shop", 0, 200)...)
	p.waitIdle()

	o := p.read()
	assert.Len(t, o.open, 10, "individual incidents published")
	assert.Len(t, o.openIDs(), 10, "distinct individual incidents")
	for _, e := range o.open {
		assert.Equal(t, incident.RouteIndividual, e.Route)
	}
	s := onlyStorm(t, o)
	assert.Equal(t, incident.StormRate, s.Type)
	assert.Equal(t, map[string]string{"alertname": "KubePodCrashLooping", "namespace": "shop"}, s.Scope)
	assert.Equal(t, int64(190), s.Members)
	assert.Equal(t, int64(190), s.Occurrences)
	assert.Equal(t, int64(200), s.AffectedTotal, "precursors included")
	assert.Len(t, s.Affected, incident.MaxAffected)
	assert.Equal(t, "KubePodCrashLooping", sig(t, s.Signal).Name)
	opened := 0
	for _, e := range o.storms {
		if e.Phase == incident.StormOpened {
			opened++
		}
	}
	assert.Equal(t, 1, opened, "one opened event")
}

func TestStage_unrelatedAlertsStayIndividual(t *testing.T) {
	p := newPipeline(t, nil)
	var alerts []alert
	stormy := pods("KubePodCrashLooping", "shop", 0, 60)
	for i, a := range stormy {
		alerts = append(alerts, a)
		switch {
		case i < 9:
			// The same alertname in three other namespaces, 3 each.
			alerts = append(alerts, pod("KubePodCrashLooping", []string{"a", "b", "c"}[i%3], fmt.Sprintf("other-%d", i)))
		case i < 19:
			// Other alertnames in the storm's namespace.
			alerts = append(alerts, pod(fmt.Sprintf("Other%d", i), "shop", fmt.Sprintf("pod-%d", i)))
		}
	}
	p.send(20*time.Millisecond, alerts...)
	p.waitIdle()

	o := p.read()
	s := onlyStorm(t, o)
	assert.Equal(t, "shop", s.Scope["namespace"])
	assert.Equal(t, int64(50), s.Members)
	assert.Equal(t, int64(60), s.AffectedTotal)
	ids := o.openIDs()
	assert.Len(t, ids, 10+9+10, "precursors and every unrelated alert are individual")
	unrelated := 0
	for _, e := range ids {
		if s := sig(t, e.Signal); s.Namespace != "shop" || s.Name != "KubePodCrashLooping" {
			unrelated++
		}
	}
	assert.Equal(t, 19, unrelated)
}

func TestStage_oneAlertnameInTwoNamespaces(t *testing.T) {
	tests := []struct {
		name       string
		scope      []string
		storms     int
		individual int
	}{
		{"default scope: a storm per namespace", []string{"alertname", "namespace"}, 2, 20},
		{"scope alertname: one cluster-wide storm", []string{"alertname"}, 1, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t, func(a *config.Aggregator) { a.Scope = tc.scope })
			var alerts []alert
			for i := range 30 {
				alerts = append(alerts, pod("KubeContainerOOM", "ns-a", fmt.Sprintf("a-%d", i)), pod("KubeContainerOOM", "ns-b", fmt.Sprintf("b-%d", i)))
			}
			p.send(20*time.Millisecond, alerts...)
			p.waitIdle()

			o := p.read()
			l := o.latest()
			assert.Len(t, l, tc.storms)
			assert.Len(t, o.openIDs(), tc.individual)
			var members, affected int64
			for _, s := range l {
				members += s.Members
				affected += s.AffectedTotal
				assert.Equal(t, incident.StormRate, s.Type)
				assert.Len(t, s.Scope, len(tc.scope))
			}
			assert.Equal(t, int64(60-tc.individual), members)
			assert.Equal(t, int64(60), affected)
		})
	}
}

func TestStage_patternStormFromSixNodesAcrossNamespaces(t *testing.T) {
	p := newPipeline(t, nil) // pattern: more than 5 in 120s
	var alerts []alert
	for i := range 6 {
		ns := fmt.Sprintf("team-%d", i)
		alerts = append(alerts, alert{name: "NodeFilesystemAlmostFull", namespace: ns, target: signal.Target{Kind: "Node", Name: fmt.Sprintf("node-%d", i)}})
	}
	// One every 20s: the sixth arrives at t=120s, 100s after the first.
	p.settle(20*time.Second, alerts...)

	o := p.read()
	assert.Len(t, o.openIDs(), 5)
	s := onlyStorm(t, o)
	assert.Equal(t, incident.StormPattern, s.Type)
	assert.Equal(t, map[string]string{"alertname": "NodeFilesystemAlmostFull"}, s.Scope)
	assert.Equal(t, int64(1), s.Members)
	assert.Equal(t, int64(6), s.AffectedTotal)
	assert.Equal(t, "node-5", sig(t, s.Signal).Target.Name, "the sixth node opened it")
}

func TestStage_memberRepeatsCountOnTheStorm(t *testing.T) {
	p := newPipeline(t, nil)
	alerts := pods("KubePodCrashLooping", "shop", 0, 15)
	p.settle(100*time.Millisecond, alerts...) // 10 individual, 5 members
	before := p.read()
	require.Len(t, before.openIDs(), 10)
	s := onlyStorm(t, before)
	require.Equal(t, int64(5), s.Members)

	// Every alert fires 3 more times.
	for range 3 {
		p.send(100*time.Millisecond, alerts...)
	}
	p.waitIdle()

	o := p.read()
	assert.Len(t, o.open, 10, "repeats never open an incident")
	s = onlyStorm(t, o)
	assert.Equal(t, int64(5), s.Members)
	assert.Equal(t, int64(5*4), s.Occurrences, "members' repeats count on the storm")
	assert.Equal(t, int64(15), s.AffectedTotal)
}

func TestStage_lifecycleInactivityCloseOnceThenNewStorm(t *testing.T) {
	p := newPipeline(t, nil) // inactivity 60s
	p.settle(time.Second, pods("KubePodCrashLooping", "shop", 0, 12)...)
	first := onlyStorm(t, p.read())
	lastMember := p.clk.Now()

	// t = last member + 59.999s: the sweep finds nothing to close.
	p.advance(60*time.Second - time.Millisecond)
	assert.Empty(t, p.read().closes(), "no close before the inactivity timeout")

	// t = last member + 60s: the sweep closes it.
	p.advance(time.Millisecond)
	o := p.read()
	assert.Equal(t, map[string]int{first.StormID: 1}, o.closes())
	closed := o.latest()[first.StormID]
	assert.Equal(t, incident.StormClosed, closed.Phase)
	assert.Equal(t, lastMember.Add(60*time.Second), closed.ClosedAt)
	assert.Equal(t, int64(2), closed.Members)

	// Later sweeps, past the close claim's lease too, do not close it again.
	p.advance(time.Second)
	p.advance(time.Minute)
	assert.Equal(t, map[string]int{first.StormID: 1}, p.read().closes(), "close emitted exactly once")

	// A fresh burst after the close is a new storm.
	p.settle(time.Second, pods("KubePodCrashLooping", "shop", 100, 12)...)
	o = p.read()
	l := o.latest()
	require.Len(t, l, 2)
	for id, s := range l {
		if id != first.StormID {
			assert.Equal(t, int64(2), s.Members)
			assert.True(t, s.ClosedAt.IsZero(), "the new storm is open")
		}
	}
	assert.Len(t, o.openIDs(), 20)
}

func TestStage_maxDurationClosesAnActiveStorm(t *testing.T) {
	p := newPipeline(t, func(a *config.Aggregator) { a.MaxDuration = 2 * time.Minute })
	p.settle(time.Second, pods("KubePodCrashLooping", "shop", 0, 11)...)
	first := onlyStorm(t, p.read())
	require.Equal(t, p.clk.Now(), first.DetectedAt, "the 11th incident opened it")
	// A new member every 20s keeps the window active (t = detection +
	// 20s … 100s): inactivity never ends it, the maximum duration does.
	p.settle(20*time.Second, pods("KubePodCrashLooping", "shop", 100, 5)...)
	p.advance(20*time.Second - time.Millisecond) // detection + 119.999s
	assert.Empty(t, p.read().closes())
	p.advance(time.Millisecond) // detection + 120s
	o := p.read()
	assert.Equal(t, map[string]int{first.StormID: 1}, o.closes())
	closed := o.latest()[first.StormID]
	assert.Equal(t, first.DetectedAt.Add(2*time.Minute), closed.ClosedAt)
	assert.Equal(t, int64(6), closed.Members)
}

func TestStage_truncatedAlertsOpenTheStormEarly(t *testing.T) {
	p := newPipeline(t, nil)
	// Alertmanager left 8 alerts of the group out: the threshold of 10
	// drops to 2, so the third incident opens the storm.
	alerts := pods("KubePodCrashLooping", "shop", 0, 5)
	for i := range alerts {
		alerts[i].truncated = 8
	}
	p.settle(100*time.Millisecond, alerts...)
	o := p.read()
	assert.Len(t, o.openIDs(), 2)
	assert.Equal(t, int64(3), onlyStorm(t, o).Members)
}

func TestStage_redeliveryRepublishesTheSameOutputs(t *testing.T) {
	p := newPipeline(t, nil)
	p.send(10*time.Millisecond, pods("KubePodCrashLooping", "shop", 0, 20)...)
	p.waitIdle()
	before := p.read()
	s := onlyStorm(t, before)

	// Hand every dedup.new message to the handler again, as a redelivery
	// (from the archive: the aggregator's acks let them go).
	ctx := context.Background()
	require.NoError(t, bus.WaitStreamArchived(ctx, p.conn.JS, p.subj.StreamName(bus.StreamIncidents)))
	stream, err := p.conn.JS.Stream(ctx, p.subj.StreamName(bus.StreamIncidentsArchive))
	require.NoError(t, err)
	oc, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{p.subj.DedupNew()}})
	require.NoError(t, err)
	batch, err := oc.Fetch(20, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	n := 0
	for m := range batch.Messages() {
		n++
		outs, err := p.agg.Handle(ctx, &bus.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
		require.NoError(t, err)
		var ev incident.Event
		require.NoError(t, json.Unmarshal(m.Data(), &ev))
		if outs[0].Subject == p.subj.IncidentsOpen() {
			require.Len(t, outs, 1)
			assert.Equal(t, "open:"+ev.IncidentID, outs[0].MsgID)
			assert.Contains(t, before.openIDs(), ev.IncidentID)
			continue
		}
		// A storm's incident: the storm event, and the record of which
		// storm the incident joined, under the same id as the first time.
		require.Len(t, outs, 2)
		assert.Equal(t, p.subj.Audit(storm.StageName), outs[1].Subject)
		assert.Equal(t, "routed:"+ev.IncidentID, outs[1].MsgID)
		var routed incident.Audit
		require.NoError(t, json.Unmarshal(outs[1].Data, &routed))
		assert.Equal(t, incident.Audit{Kind: incident.AuditRouted, Time: routed.Time, IncidentID: ev.IncidentID, Fingerprint: ev.Fingerprint,
			StormID: s.StormID, StormType: incident.StormRate, Opened: routed.Opened}, routed)
		var st incident.Storm
		require.NoError(t, json.Unmarshal(outs[0].Data, &st))
		assert.Equal(t, s.StormID, st.StormID)
		assert.Equal(t, s.Members, st.Members, "nothing counted twice")
		assert.Equal(t, s.Revision, st.Revision)
	}
	assert.Equal(t, 20, n)
}

// An update the deduper decided before the aggregator had routed its
// incident follows the route once there is one: it waits while the route
// is undecided, goes to the writer for an individual incident, counts on
// the storm for a member, and is dropped when its incident's record is
// gone.
func TestStage_unroutedUpdateFollowsTheRoute(t *testing.T) {
	p := newPipeline(t, nil)
	ctx := context.Background()
	alerts := pods("KubePodCrashLooping", "shop", 0, 12) // 10 individual, 2 members
	p.settle(time.Second, alerts...)
	before := onlyStorm(t, p.read())

	// decide applies a signal of a to its record as the deduper does and
	// returns the deduper's event as a message on subject.
	decide := func(a alert, subject string) (*bus.Msg, []byte) {
		t.Helper()
		s := p.signal(a)
		raw, err := signal.Encode(s)
		require.NoError(t, err)
		h := s.Head()
		res, err := p.incidents.Decide(ctx, &h, s.ID)
		require.NoError(t, err)
		ev := incident.Event{Decision: res.Decision, Signal: raw}
		record.Refresh(&ev, &res.Record)
		data, err := incident.Marshal(&ev)
		require.NoError(t, err)
		return &bus.Msg{Subject: subject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: {"d:" + s.ID}}}, raw
	}
	unrouted := func(a alert) (*bus.Msg, []byte) { return decide(a, p.subj.DedupUnrouted()) }
	event := func(o bus.Output) incident.Event {
		t.Helper()
		var ev incident.Event
		require.NoError(t, incident.Unmarshal(o.Data, &ev))
		return ev
	}

	// An individual incident's update goes to the writer, with the
	// record's values and the signal as received.
	m, raw := unrouted(alerts[0])
	outs, err := p.agg.Handle(ctx, m)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	assert.Equal(t, p.subj.IncidentsUpdate(), outs[0].Subject)
	assert.Equal(t, "routed:"+m.MsgID(), outs[0].MsgID, "derived from the input's msg-id")
	ev := event(outs[0])
	assert.Equal(t, incident.RouteIndividual, ev.Route)
	assert.Equal(t, incident.DecisionOccurrence, ev.Decision)
	assert.EqualValues(t, 2, ev.Count)
	assert.Equal(t, string(raw), string(ev.Signal))

	// A storm member's update counts on the storm.
	m, _ = unrouted(alerts[11])
	outs, err = p.agg.Handle(ctx, m)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	assert.Equal(t, p.subj.IncidentsStorm(), outs[0].Subject)
	var st incident.Storm
	require.NoError(t, incident.Unmarshal(outs[0].Data, &st))
	assert.Equal(t, before.StormID, st.StormID)
	assert.Equal(t, before.Occurrences+1, st.Occurrences)

	// An incident the aggregator has not routed yet: its update waits,
	// and goes on once the new incident is routed.
	other := pod("KubeContainerOOM", "other", "api-0")
	newMsg, _ := decide(other, p.subj.DedupNew())
	m, _ = unrouted(other)
	_, err = p.agg.Handle(ctx, m)
	require.ErrorIs(t, err, storm.ErrUnrouted)
	outs, err = p.agg.Handle(ctx, newMsg)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	require.Equal(t, p.subj.IncidentsOpen(), outs[0].Subject)
	assert.EqualValues(t, 2, event(outs[0]).Count, "the route was set on the record the update counted in")
	outs, err = p.agg.Handle(ctx, m)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	assert.Equal(t, p.subj.IncidentsUpdate(), outs[0].Subject)

	// An update whose incident's record is gone is dropped.
	m, _ = unrouted(alerts[1])
	var gone incident.Event
	require.NoError(t, incident.Unmarshal(m.Data, &gone))
	gone.IncidentID = "i00000000000000000000"
	m.Data, err = incident.Marshal(&gone)
	require.NoError(t, err)
	outs, err = p.agg.Handle(ctx, m)
	require.NoError(t, err)
	assert.Empty(t, outs)

	met := p.agg.Metrics().Unrouted
	for result, want := range map[string]float64{"individual": 2, "storm": 1, "waiting": 1, "gone": 1} {
		var v dto.Metric
		require.NoError(t, met.WithLabelValues(result).Write(&v))
		assert.Equal(t, want, v.GetCounter().GetValue(), result)
	}
}
