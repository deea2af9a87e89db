package allinone_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/writer"
)

var t0 = time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)

func previewEvent(t testing.TB, id, fp string, rev, count int64, sig signal.Signal) *incident.Event {
	t.Helper()
	sig.Source, sig.Status, sig.StartsAt, sig.ReceivedAt = signal.SourceAlertmanager, signal.StatusFiring, t0, t0
	if sig.Severity == "" {
		sig.Severity = signal.SeverityCritical
	}
	b, err := signal.Encode(&sig)
	require.NoError(t, err)
	return &incident.Event{Decision: incident.DecisionNew, IncidentID: id, Fingerprint: fp, Revision: rev,
		State: incident.StateFiring, Count: count, FirstSeen: t0, LastSeen: t0, Route: incident.RouteIndividual, Signal: b}
}

func newPreview(t testing.TB) *writer.Preview {
	t.Helper()
	p, err := writer.NewPreview(config.Default().Writer)
	require.NoError(t, err)
	return p
}

// The sink places a request where the writer places it: the target's
// namespace first, then the signal's, and the fallback namespace, with
// the origin kept, for one that cannot exist.
func TestPreview_placesLikeTheWriter(t *testing.T) {
	cases := map[string]struct {
		sig            signal.Signal
		ns, origin     string
		wantEnvInLabel string
	}{
		"signal namespace":    {signal.Signal{Name: "A", Namespace: "payments-prod"}, "payments-prod", "", "production"},
		"target first":        {signal.Signal{Name: "A", Namespace: "monitoring", Target: signal.Target{Kind: "Pod", Name: "p", Namespace: "shop"}}, "shop", "", ""},
		"invalid namespace":   {signal.Signal{Name: "A", Namespace: "Team_Payments.Prod"}, "stormweir-system", "Team_Payments.Prod", ""},
		"too long namespace":  {signal.Signal{Name: "A", Namespace: "n0123456789012345678901234567890123456789012345678901234567890123"}, "stormweir-system", "n0123456789012345678901234567890123456789012345678901234567890123", ""},
		"no namespace at all": {signal.Signal{Name: "A"}, "stormweir-system", "", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w, err := newPreview(t).Event(context.Background(), previewEvent(t, "inc-1", "fp-1", 1, 1, tc.sig))
			require.NoError(t, err)
			require.True(t, w.Created)
			rr := w.Request
			assert.Equal(t, tc.ns, rr.Namespace)
			assert.Equal(t, tc.origin, rr.Annotations[v1alpha1.AnnotationOriginNamespace])
			require.NotNil(t, rr.Status.Occurrences, "the create carries the event's status, as the writer's does")
			assert.Equal(t, int64(1), rr.Status.Occurrences.Count)
			assert.Equal(t, int64(1), rr.Status.ObservedRevision)
			if tc.wantEnvInLabel != "" {
				assert.Equal(t, tc.wantEnvInLabel, rr.Spec.Environment)
			}
		})
	}
}

// A storm's request goes to the namespace of its scope, with the same
// fallback.
func TestPreview_stormPlacement(t *testing.T) {
	sig := signal.Signal{Name: "KubePodNotReady", Source: signal.SourceAlertmanager, Severity: signal.SeverityWarning, Namespace: "Bad_NS", StartsAt: t0, ReceivedAt: t0}
	b, err := signal.Encode(&sig)
	require.NoError(t, err)
	p := newPreview(t)
	s := &incident.Storm{Phase: incident.StormOpened, StormID: "storm-1", Fingerprint: "sfp", Type: incident.StormRate,
		Scope: map[string]string{"alertname": "KubePodNotReady", "namespace": "Bad_NS"}, Revision: 1, DetectedAt: t0, Members: 11, Occurrences: 11, Signal: b}
	w, err := p.Storm(context.Background(), s)
	require.NoError(t, err)
	require.True(t, w.Created)
	assert.Equal(t, "stormweir-system", w.Request.Namespace)
	assert.Equal(t, "Bad_NS", w.Request.Annotations[v1alpha1.AnnotationOriginNamespace])

	s.Revision, s.Members = 2, 12
	w, err = p.Storm(context.Background(), s)
	require.NoError(t, err)
	assert.False(t, w.Created, "later storm events are status writes")
	assert.Equal(t, int64(12), w.Request.Status.Storm.Members)

	w, err = p.Storm(context.Background(), s)
	require.NoError(t, err)
	assert.Nil(t, w.Request, "the same revision again writes nothing")
}

// What the writer would skip prints nothing: a repeated or older event of
// an incident, and a second incident of a fingerprint whose request is
// active, which is folded into it rather than given a second request.
func TestPreview_noSecondRequestAndNoStaleWrite(t *testing.T) {
	ctx := context.Background()
	p := newPreview(t)
	sig := signal.Signal{Name: "BackOff", Namespace: "shop", Target: signal.Target{Kind: "Pod", Name: "web-1", Namespace: "shop"}}

	w, err := p.Event(ctx, previewEvent(t, "inc-1", "fp-1", 1, 1, sig))
	require.NoError(t, err)
	require.True(t, w.Created)

	w, err = p.Event(ctx, previewEvent(t, "inc-1", "fp-1", 3, 7, sig))
	require.NoError(t, err)
	require.NotNil(t, w.Request)
	assert.False(t, w.Created)
	assert.Equal(t, int64(7), w.Request.Status.Occurrences.Count)

	for _, rev := range []int64{1, 2, 3} {
		w, err = p.Event(ctx, previewEvent(t, "inc-1", "fp-1", rev, 1, sig))
		require.NoError(t, err)
		assert.Nil(t, w.Request, "revision %d is not newer than 3: a re-post is stale", rev)
	}

	w, err = p.Event(ctx, previewEvent(t, "inc-2", "fp-1", 1, 2, sig))
	require.NoError(t, err)
	require.NotNil(t, w.Request)
	assert.False(t, w.Created, "a new incident of an active request's fingerprint is folded into it")
	assert.Equal(t, "inc-1", w.Request.Spec.IncidentID)
	assert.Len(t, w.Request.Status.FoldedIncidents, 1)
	assert.Equal(t, int64(9), w.Request.Status.Occurrences.Count)
}
