package writer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// cached lists the requests of ns in the writer's cache.
func (h *harness) cached(ns string) []v1alpha1.RemediationRequest {
	h.t.Helper()
	var l v1alpha1.RemediationRequestList
	require.NoError(h.t, h.w.cache.List(context.Background(), &l, client.InNamespace(ns)))
	return l.Items
}

// A request that reaches a terminal phase is ended, marked, and leaves the
// writer's cache; what the writer needs of it later comes from Redis
// (the next request's previousRequestRef) and one API read (an event of
// the ended incident that was still queued).
func TestWriter_endedRequestLeavesCache(t *testing.T) {
	h := startWriter(t)
	ctx := context.Background()
	ns := h.namespace("prod-"+h.id, nil)
	sig := testSignal(fingerprintOf("ended-"+h.id), "x", ns, signal.SeverityCritical)

	first := h.newIndividual(sig, "m1")
	h.open(first)
	h.waitAcked(1, 10*time.Second)
	rr1 := get(t, ns, first.IncidentID)
	require.Eventually(t, func() bool { return len(h.cached(ns)) == 1 }, 5*time.Second, 10*time.Millisecond, "an active request is cached")

	require.NoError(t, setPhase(ctx, ns, rr1.Name, "Completed"))
	require.Eventually(t, func() bool {
		return get(t, ns, first.IncidentID).Labels[v1alpha1.LabelEnded] == "true"
	}, 10*time.Second, 10*time.Millisecond, "the finished request is marked ended")
	_, err := h.store.Get(ctx, sig.Fingerprint)
	require.ErrorIs(t, err, record.ErrNotFound, "its incident record ended before the mark")
	require.Eventually(t, func() bool { return len(h.cached(ns)) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the ended request leaves the cache")
	assert.EqualValues(t, 1, counterValue(h.w.m.ended))
	// The host memo of the create has expired: nothing in this process
	// remembers the first request any more.
	h.advance(2 * time.Minute)

	second := h.newIndividual(sig, "m2")
	h.open(second)
	h.waitAcked(2, 10*time.Second)
	rr2 := get(t, ns, second.IncidentID)
	require.NotNil(t, rr2.Spec.PreviousRequestRef, "the previous request comes from Redis")
	assert.Equal(t, v1alpha1.RequestRef{Name: rr1.Name, Namespace: ns, IncidentID: first.IncidentID, Phase: "Completed"}, *rr2.Spec.PreviousRequestRef)

	// An event of the first incident decided before it ended, delivered
	// only now: it counts in its own (finished) request, not folded into
	// the second incident's and not as a request of its own.
	late := first
	late.Decision, late.Revision, late.Count = incident.DecisionOccurrence, first.Revision+1, 7
	h.update(late)
	h.waitWritten(3, 10*time.Second)
	items := list(t, ns)
	require.Len(t, items, 2)
	got1 := get(t, ns, first.IncidentID)
	require.NotNil(t, got1.Status.Occurrences)
	assert.EqualValues(t, 7, got1.Status.Occurrences.Count)
	assert.Empty(t, get(t, ns, second.IncidentID).Status.FoldedIncidents)
	assert.Zero(t, h.result("dlq"))
}

// A writer starting among many finished requests caches none of them:
// only the active request, and a terminal one finished while no writer
// ran until it has ended its incident.
func TestWriter_startsWithoutFinishedRequests(t *testing.T) {
	h := prepareWriter(t)
	ctx := context.Background()
	ns := h.namespace("prod-"+h.id, nil)
	store := record.NewRedisStore(h.redis.Client, h.redis.Prefix, h.cfg.Dedup, h.clk)

	const finished = 20
	for i := range finished {
		rr := validRequest(ns)
		rr.GenerateName, rr.Name = "", fmt.Sprintf("rr-done-%d", i)
		rr.Spec.IncidentID = fmt.Sprintf("idone%d", i)
		rr.Labels = map[string]string{v1alpha1.LabelEnded: "true"}
		rr.Status.Phase = "Completed"
		require.NoError(t, admin.Create(ctx, rr))
	}
	// Finished while no writer ran: its incident is still open in Redis.
	sig := testSignal(fingerprintOf("down-"+h.id), "x", ns, signal.SeverityWarning)
	head := sig.Head()
	res, err := store.Decide(ctx, &head, "m1")
	require.NoError(t, err)
	down := validRequest(ns)
	down.GenerateName, down.Name = "", RequestName(res.Record.IncidentID)
	down.Spec.IncidentID, down.Spec.Fingerprint = res.Record.IncidentID, sig.Fingerprint
	down.Status.Phase = "Failed"
	require.NoError(t, admin.Create(ctx, down))
	active := validRequest(ns)
	active.GenerateName, active.Name = "", "rr-active"
	require.NoError(t, admin.Create(ctx, active))

	h.start()
	require.Eventually(t, func() bool {
		_, err := store.Get(ctx, sig.Fingerprint)
		return errors.Is(err, record.ErrNotFound)
	}, 10*time.Second, 10*time.Millisecond, "the request that finished while no writer ran ends its incident")
	prev, err := store.LastFinished(ctx, sig.Fingerprint)
	require.NoError(t, err)
	assert.Equal(t, record.Finished{Namespace: ns, Name: down.Name, IncidentID: down.Spec.IncidentID, Phase: "Failed"}, prev)
	require.Eventually(t, func() bool {
		var rr v1alpha1.RemediationRequest
		require.NoError(t, admin.Get(ctx, client.ObjectKeyFromObject(down), &rr))
		return rr.Labels[v1alpha1.LabelEnded] == "true"
	}, 10*time.Second, 10*time.Millisecond, "and is marked ended")
	require.Eventually(t, func() bool {
		c := h.cached(ns)
		return len(c) == 1 && c[0].Name == active.Name
	}, 10*time.Second, 10*time.Millisecond, "only the active request stays cached; the %d finished ones never were", finished)
	assert.EqualValues(t, 1, counterValue(h.w.m.ended), "the finished requests were not ended again")
	assert.Len(t, list(t, ns), finished+2, "nothing deleted")
}
