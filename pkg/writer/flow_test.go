package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// setPhase writes status.phase as a remediation controller would: server-side
// apply under its own field manager, without a resourceVersion.
func setPhase(ctx context.Context, ns, name, phase string) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "RemediationRequest",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"status":   map[string]any{"phase": phase},
	}}
	return admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("remediator"))
}

// updates publishes occurrence updates of e with revisions from..to, each
// revision's count equal to it.
func (h *harness) updates(e incident.Event, from, to int64) {
	h.t.Helper()
	for rev := from; rev <= to; rev++ {
		u := e
		u.Decision, u.Revision, u.Count = incident.DecisionOccurrence, rev, rev
		h.update(u)
	}
}

// t=0: a request is created. A flood of 1,000 updates at t=0 costs not one
// write until its spacing has passed; at t=coalesce_interval one write
// carries the newest revision. Every older message was acked without a
// write, as stale or superseded.
func TestWriter_coalescesOccurrenceFlood(t *testing.T) {
	h := startWriter(t)
	interval := h.p.Config.Writer.CoalesceInterval
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("flood-" + h.id)
	id := "i" + h.id + "flood"
	e := event(fp, id, 1, 1, ns, signal.SeverityWarning)
	h.open(e)
	h.waitAcked(1, 10*time.Second)
	created := h.clk.Now()
	before := h.writes()

	const updates = 1000
	h.updates(e, 2, updates+1)
	st := h.settle()
	assert.Equal(t, 1, st.pending, "only the newest revision waits")
	assert.Equal(t, created.Add(interval), st.next, "its write is due one interval after the create")
	assert.EqualValues(t, updates, h.acked(), "the create and every older revision are acked")
	assert.Zero(t, h.writes()-before, "nothing is written within the spacing")

	h.advance(interval)
	assert.EqualValues(t, updates+1, h.acked())
	assert.Equal(t, 1.0, h.writes()-before, "one write for the whole flood")
	rr := get(t, ns, id)
	assert.EqualValues(t, updates+1, rr.Status.Occurrences.Count, "final count is exact")
	assert.EqualValues(t, updates+1, rr.Status.ObservedRevision)
	assert.EqualValues(t, updates-1, counterValue(h.w.m.coalesced)+counterValue(h.w.m.skipped.WithLabelValues(skipStale)),
		"every older revision was superseded or stale")
	assert.Zero(t, h.result(bus.ResultNak))
}

// With two handler slots, a flood on one request can only drain if older
// revisions are released as soon as a newer one is queued: were they
// held until the write, two handlers would hold the whole flood. On a
// clock that does not move, every message but the newest is acked.
func TestWriter_floodOnOneRequestHoldsOneHandler(t *testing.T) {
	h := startWriter(t, func(c *config.Config) {
		c.Writer.Concurrency = 2
		c.Writer.CoalesceInterval, c.Writer.CoalesceMaxInterval = time.Second, 5*time.Second
	})
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("slots-" + h.id)
	id := "i" + h.id + "slots"
	e := event(fp, id, 1, 1, ns, signal.SeverityWarning)
	h.open(e)
	h.waitAcked(1, 10*time.Second)
	before := h.writes()
	const updates = 300
	h.updates(e, 2, updates+1)
	st := h.settle()
	assert.Equal(t, 1, st.pending)
	assert.EqualValues(t, updates, h.acked(), "299 updates acked while the clock stands still")

	h.advance(time.Second)
	assert.EqualValues(t, updates+1, h.acked())
	assert.Equal(t, 1.0, h.writes()-before)
	rr := get(t, ns, id)
	assert.EqualValues(t, updates+1, rr.Status.Occurrences.Count, "the newest revision is written")
	assert.EqualValues(t, updates-1, counterValue(h.w.m.coalesced)+counterValue(h.w.m.skipped.WithLabelValues(skipStale)))
	assert.Zero(t, h.result(bus.ResultNak))
}

// A request updated every 2s, with coalesce_interval 1s and
// coalesce_max_interval 8s: its spacing doubles at each write (1s, 2s, 4s,
// 8s) and then stays at 8s, so the writes happen at exactly these times.
// Each update still lands. After a quiet minute the next update is written
// at once and the spacing is back to 1s.
func TestWriter_busyRequestWritesBackOff(t *testing.T) {
	h := startWriter(t, func(c *config.Config) {
		c.Writer.CoalesceInterval, c.Writer.CoalesceMaxInterval = time.Second, 8*time.Second
	})
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("busy-" + h.id)
	id := "i" + h.id + "busy"
	e := event(fp, id, 1, 1, ns, signal.SeverityWarning)
	h.open(e)
	h.waitAcked(1, 10*time.Second)
	t0 := h.clk.Now()
	before := h.writes()

	var writtenAt []time.Duration
	written := func() {
		for n := int(h.writes() - before); len(writtenAt) < n; {
			writtenAt = append(writtenAt, h.clk.Since(t0))
		}
	}
	rev := int64(1)
	for range 20 { // an update at t=2s, 4s, …, 40s
		h.advance(2 * time.Second)
		written()
		rev++
		h.updates(e, rev, rev)
		h.settle()
		written()
	}
	st := h.settle()
	require.Equal(t, 1, st.pending, "the update of t=40s waits")
	assert.Equal(t, t0.Add(48*time.Second), st.next)
	h.advance(8 * time.Second)
	written()
	sec := time.Second
	assert.Equal(t, []time.Duration{2 * sec, 4 * sec, 8 * sec, 16 * sec, 24 * sec, 32 * sec, 40 * sec, 48 * sec}, writtenAt,
		"20 updates, 8 writes")
	assert.EqualValues(t, rev, get(t, ns, id).Status.Occurrences.Count)
	assert.EqualValues(t, rev, h.acked())

	// A minute later the request is quiet: written at once, spacing reset.
	h.advance(time.Minute)
	rev++
	h.updates(e, rev, rev)
	h.settle()
	assert.Len(t, writtenAt, 8)
	written()
	assert.Equal(t, 108*sec, writtenAt[8], "a quiet request's update is written at once")
	rev++
	h.updates(e, rev, rev)
	st = h.settle()
	assert.Equal(t, t0.Add(109*time.Second), st.next, "and its spacing is coalesce_interval again")
	h.advance(time.Second)
	assert.EqualValues(t, rev, get(t, ns, id).Status.Occurrences.Count)
}

// A resolve is written after coalesce_interval even on a request whose
// writes have backed off to a long spacing: readers must not wait 12.8s
// to see that the signal stopped firing.
func TestWriter_resolveSkipsTheBusySpacing(t *testing.T) {
	h := startWriter(t, func(c *config.Config) {
		c.Writer.CoalesceInterval, c.Writer.CoalesceMaxInterval = 100*time.Millisecond, 30*time.Second
	})
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("resolve-" + h.id)
	id := "i" + h.id + "resolve"
	e := event(fp, id, 1, 1, ns, signal.SeverityWarning)
	h.open(e)
	h.waitAcked(1, 10*time.Second)
	before := h.writes()
	// Each update comes exactly when the spacing has run out, so it is
	// written at once and the spacing doubles: 0.1s, 0.2s, …, 12.8s.
	rev := int64(1)
	for spacing := 100 * time.Millisecond; spacing <= 6400*time.Millisecond; spacing *= 2 {
		h.advance(spacing)
		rev++
		h.updates(e, rev, rev)
		h.settle()
	}
	require.Equal(t, 7.0, h.writes()-before, "each of the 7 updates written at once")
	lastWrite := h.clk.Now()

	rev++
	r := e
	r.Decision, r.Revision, r.Count, r.State = incident.DecisionResolved, rev, rev-1, incident.StateResolved
	r.ResolvedAt = h.clk.Now()
	h.update(r)
	st := h.settle()
	require.Equal(t, 1, st.pending)
	assert.Equal(t, lastWrite.Add(100*time.Millisecond), st.next, "the resolve is due after coalesce_interval, not 12.8s")
	h.advance(100 * time.Millisecond)
	assert.Equal(t, 8.0, h.writes()-before)
	rr := get(t, ns, id)
	require.NotNil(t, rr.Status.Signal)
	assert.Equal(t, v1alpha1.SignalResolved, rr.Status.Signal.State)
}

// The remediation controller writes status.phase back to back while the
// writer writes 100 updates, one write each (the clock is moved to each
// update's due time): neither side ever conflicts, and each keeps its
// own fields.
func TestWriter_remediationControllerOwnsPhase(t *testing.T) {
	h := startWriter(t, func(c *config.Config) { c.Writer.CoalesceInterval = 50 * time.Millisecond })
	ctx := context.Background()
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("phase-" + h.id)
	id := "i" + h.id + "phase"
	e := event(fp, id, 1, 1, ns, signal.SeverityCritical)
	h.open(e)
	h.waitAcked(1, 10*time.Second)
	name := RequestName(id)
	before := h.writes()

	const updates = 100
	var ctrlErrs []error
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		phases := []string{"Pending", "Running", "Verifying"}
		for i := 0; ; i++ {
			select {
			case <-stop:
				if err := setPhase(ctx, ns, name, "Running"); err != nil {
					ctrlErrs = append(ctrlErrs, err)
				}
				return
			default:
			}
			if err := setPhase(ctx, ns, name, phases[i%len(phases)]); err != nil {
				ctrlErrs = append(ctrlErrs, err)
			}
		}
	})
	for rev := int64(2); rev <= updates+1; rev++ {
		h.updates(e, rev, rev)
		st := h.settle()
		require.Equal(t, 1, st.pending)
		h.advanceTo(st.next)
	}
	close(stop)
	wg.Wait()

	assert.Equal(t, float64(updates), h.writes()-before, "one write per update")
	assert.Empty(t, ctrlErrs, "the controller's applies must never conflict")
	assert.Zero(t, h.result(bus.ResultNak), "the writer's applies must never fail")
	assert.Zero(t, h.result(bus.ResultDLQ))
	rr := get(t, ns, id)
	assert.Equal(t, "Running", rr.Status.Phase, "controller's field kept")
	assert.EqualValues(t, updates+1, rr.Status.Occurrences.Count, "stormweir's fields kept")
	owners := map[string]string{}
	for _, mf := range rr.ManagedFields {
		// Server-side apply entries only: the create's own entry also
		// lists the status it carried.
		if mf.Operation == metav1.ManagedFieldsOperationApply && mf.FieldsV1 != nil {
			var f map[string]any
			require.NoError(t, json.Unmarshal(mf.FieldsV1.Raw, &f))
			st, _ := f["f:status"].(map[string]any)
			for k := range st {
				owners[k] = mf.Manager
			}
		}
	}
	assert.Equal(t, "remediator", owners["f:phase"])
	assert.Equal(t, "stormweir", owners["f:occurrences"])
	assert.Equal(t, "stormweir", owners["f:observedRevision"])
}

// A writer behind the deduper writes an incident's newest state from its
// record at once; the events still queued behind that one are stale then
// and cost no write.
func TestWriter_behindTheDeduperWritesTheRecordsNewestState(t *testing.T) {
	h := startWriter(t)
	ctx := context.Background()
	ns := h.namespace("prod-"+h.id, nil)
	sig := testSignal(fingerprintOf("behind-"+h.id), "x", ns, signal.SeverityWarning)
	head := sig.Head()

	var events []incident.Event
	for i := range 4 {
		res, err := h.store.Decide(ctx, &head, fmt.Sprintf("m%d", i))
		require.NoError(t, err)
		rec := res.Record
		if i == 0 {
			rec, err = h.store.SetRoute(ctx, sig.Fingerprint, rec.IncidentID, incident.RouteIndividual)
			require.NoError(t, err)
		}
		e := incident.Event{Decision: res.Decision, Signal: encoded(sig)}
		record.Refresh(&e, &rec)
		events = append(events, e)
	}
	before := h.writes()
	h.open(events[0])
	h.waitAcked(1, 10*time.Second)
	rr := get(t, ns, events[0].IncidentID)
	require.NotNil(t, rr.Status.Occurrences)
	assert.EqualValues(t, 4, rr.Status.Occurrences.Count, "the create carries the record's count")
	assert.Equal(t, events[3].Revision, rr.Status.ObservedRevision)

	for _, e := range events[1:] {
		h.update(e)
	}
	h.waitWritten(4, 10*time.Second)
	assert.Equal(t, 1.0, h.writes()-before, "one create, and the queued events are stale")
	assert.EqualValues(t, 4, get(t, ns, events[0].IncidentID).Status.Occurrences.Count)
}

func TestWriter_terminalPhaseEndsIncident(t *testing.T) {
	h := startWriter(t)
	ctx := context.Background()
	ns := h.namespace("prod-"+h.id, nil)
	sig := testSignal(fingerprintOf("term-"+h.id), "x", ns, signal.SeverityCritical)

	first := h.newIndividual(sig, "m1")
	h.open(first)
	h.waitAcked(1, 10*time.Second)
	rr1 := get(t, ns, first.IncidentID)

	require.NoError(t, setPhase(ctx, ns, rr1.Name, "Completed"))
	require.Eventually(t, func() bool {
		_, err := h.store.Get(ctx, sig.Fingerprint)
		return errors.Is(err, record.ErrNotFound)
	}, 10*time.Second, 10*time.Millisecond, "a Completed request ends its incident record")

	second := h.newIndividual(sig, "m2")
	require.NotEqual(t, first.IncidentID, second.IncidentID)
	h.open(second)
	h.waitAcked(2, 10*time.Second)
	rr2 := get(t, ns, second.IncidentID)
	require.NotNil(t, rr2.Spec.PreviousRequestRef)
	assert.Equal(t, v1alpha1.RequestRef{Name: rr1.Name, Namespace: ns, IncidentID: first.IncidentID, Phase: "Completed"}, *rr2.Spec.PreviousRequestRef)
	assert.Len(t, list(t, ns), 2)
}

func TestWriter_foldsIncidentIntoActiveRequest(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("fold-" + h.id)
	a, b := "i"+h.id+"a", "i"+h.id+"b"
	h.open(event(fp, a, 3, 3, ns, signal.SeverityWarning))
	h.waitAcked(1, 10*time.Second)
	require.Eventually(t, func() bool {
		act, _, err := h.w.byFingerprint(context.Background(), fp)
		return err == nil && act != nil
	}, 5*time.Second, 10*time.Millisecond)

	h.open(event(fp, b, 1, 1, ns, signal.SeverityWarning))
	eb := event(fp, b, 2, 4, ns, signal.SeverityWarning)
	eb.Decision = incident.DecisionOccurrence
	h.update(eb)
	h.waitWritten(3, 10*time.Second)

	items := list(t, ns)
	require.Len(t, items, 1, "no second active request for one fingerprint")
	rr := items[0]
	assert.Equal(t, a, rr.Spec.IncidentID)
	require.Len(t, rr.Status.FoldedIncidents, 1)
	assert.Equal(t, b, rr.Status.FoldedIncidents[0].IncidentID)
	assert.EqualValues(t, 4, rr.Status.FoldedIncidents[0].Count)
	assert.EqualValues(t, 3+4, rr.Status.Occurrences.Count, "counting goes on across the fold")
	assert.EqualValues(t, 1, counterValue(h.w.m.folded))
}

// An update of an individual incident may reach the writer before its
// incident's open event (the aggregator forwards updates decided before
// the route as soon as the route is set): it creates the request, and the
// open event that follows changes nothing.
func TestWriter_updateBeforeOpenCreatesTheRequest(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	open := event(fingerprintOf("early"+h.id), "i"+h.id+"early", 1, 1, ns, signal.SeverityWarning)
	upd := open
	upd.Decision, upd.Revision, upd.Count = incident.DecisionOccurrence, 2, 2

	h.update(upd)
	h.waitAcked(1, 10*time.Second)
	rr := get(t, ns, open.IncidentID)
	require.NotNil(t, rr.Status.Occurrences)
	assert.EqualValues(t, 2, rr.Status.Occurrences.Count)
	assert.Equal(t, "KubePodCrashLooping", rr.Spec.Signal.Name, "the spec from the update's signal")

	before := h.writes()
	h.open(open)
	h.waitWritten(2, 10*time.Second)
	assert.Zero(t, h.writes()-before, "the older open event is stale")
	assert.EqualValues(t, 2, get(t, ns, open.IncidentID).Status.Occurrences.Count)
	assert.Len(t, list(t, ns), 1)
}

// The writer takes only what the aggregator routed individually: an event
// of an incident not routed (or a storm's member) is dead-lettered, never
// turned into a request.
func TestWriter_deadLettersEventsNotRoutedIndividually(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	for i, route := range []string{incident.RouteUndecided, "s" + h.id + "-storm"} {
		e := event(fingerprintOf(fmt.Sprintf("unrouted%d%s", i, h.id)), fmt.Sprintf("i%sunrouted%d", h.id, i), 2, 2, ns, signal.SeverityWarning)
		e.Decision, e.Route = incident.DecisionOccurrence, route
		h.update(e)
	}
	require.Eventually(t, func() bool { return h.result(bus.ResultDLQ) == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Empty(t, list(t, ns))
}

func TestWriter_writesStormRequest(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	now := time.Now().UTC()
	affected := make([]signal.Target, 0, 150)
	for i := range 150 {
		affected = append(affected, signal.Target{Kind: "Pod", Name: fmt.Sprintf("api-%d", i), Namespace: ns})
	}
	s := incident.Storm{
		Phase: incident.StormOpened, StormID: "s" + h.id, Fingerprint: fingerprintOf("storm" + h.id),
		Scope: map[string]string{"alertname": "KubePodCrashLooping", "namespace": ns}, Type: incident.StormRate,
		Revision: 1, DetectedAt: now, LastSeen: now, Members: 11, Occurrences: 11,
		Affected: affected[:11], AffectedTotal: 11,
		Signal: encoded(testSignal("x", "x", ns, signal.SeverityCritical)),
	}
	h.publish(h.subj.IncidentsStorm(), s, "storm:1")
	upd := s
	upd.Phase, upd.Revision, upd.Members, upd.Occurrences = incident.StormClosed, 2, 150, 900
	upd.Affected, upd.AffectedTotal, upd.ClosedAt = affected[:incident.MaxAffected], 150, now.Add(time.Minute)
	h.publish(h.subj.IncidentsStorm(), upd, "storm:2")
	h.waitWritten(2, 10*time.Second)

	rr := get(t, ns, s.StormID)
	require.NotNil(t, rr.Spec.Storm)
	assert.Equal(t, v1alpha1.StormType("rate"), rr.Spec.Storm.Type)
	assert.Equal(t, s.Scope, rr.Spec.Storm.Scope)
	assert.Equal(t, "true", rr.Labels[v1alpha1.LabelStorm])
	assert.Equal(t, "P0", rr.Spec.Priority)
	require.NotNil(t, rr.Status.Storm)
	assert.EqualValues(t, 150, rr.Status.Storm.Members)
	assert.EqualValues(t, 900, rr.Status.Storm.Occurrences)
	assert.EqualValues(t, 150, rr.Status.Storm.AffectedTotal)
	assert.Len(t, rr.Status.Storm.Affected, incident.MaxAffected)
	assert.NotNil(t, rr.Status.Storm.ClosedAt)
	assert.EqualValues(t, 900, rr.Status.Occurrences.Count)
}

func TestWriter_deadLettersInvalidRequest(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	e := event(fingerprintOf("bad"+h.id), "i"+h.id+"bad", 1, 1, ns, signal.SeverityWarning)
	sig := testSignal(e.Fingerprint, "bad", ns, signal.SeverityWarning)
	sig.Source = "carrier-pigeon" // the CRD's enum rejects it: 422
	e.Signal = encoded(sig)
	h.open(e)
	require.Eventually(t, func() bool { return h.result(bus.ResultDLQ) == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, h.result(bus.ResultNak), "a validation error is not retried")
	assert.Empty(t, list(t, ns))
	msg, err := h.p.Bus.JS.Stream(context.Background(), h.subj.StreamName(bus.StreamDLQ))
	require.NoError(t, err)
	raw, err := msg.GetLastMsgForSubject(context.Background(), h.subj.DLQ(Stage))
	require.NoError(t, err)
	assert.Contains(t, raw.Header.Get(bus.HeaderDLQReason), "Unsupported value")
}
