package writer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

func TestWriter_classifiesEnvironmentAndPriority(t *testing.T) {
	ovID := testenv.RandomID()[:8]
	h := startWriter(t, func(c *config.Config) { c.Writer.Environment.OverrideConfigMap = "ov-" + ovID + "/envs" })
	ctx := context.Background()
	ov := h.namespace("ov-"+ovID, nil)
	namespaces := map[string]string{
		"production":  h.namespace("shop-"+h.id, map[string]string{"environment": "production"}), // label
		"staging":     h.namespace("staging-"+h.id, nil),                                         // name pattern
		"development": h.namespace("dev-"+h.id, nil),                                             // name pattern
		"unknown":     h.namespace("misc-"+h.id, nil),                                            // nothing matches
	}
	// The override ConfigMap makes an unlabelled namespace production.
	overridden := h.namespace("billing-"+h.id, nil)
	require.NoError(t, admin.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ov, Name: "envs"},
		Data:       map[string]string{overridden: "production"},
	}))
	require.Eventually(t, func() bool {
		env, err := h.w.classifier.Environment(ctx, overridden)
		return err == nil && env == "production"
	}, 10*time.Second, 10*time.Millisecond, "override ConfigMap not seen by the cache")

	want := map[signal.Severity]map[string]string{
		signal.SeverityCritical: {"production": "P0", "staging": "P1", "development": "P2", "unknown": "P2"},
		signal.SeverityWarning:  {"production": "P1", "staging": "P2", "development": "P2", "unknown": "P2"},
		signal.SeverityInfo:     {"production": "P3", "staging": "P3", "development": "P3", "unknown": "P3"},
	}
	type expectation struct{ ns, id, env, prio string }
	var exp []expectation
	n := 0
	for sev, byEnv := range want {
		for env, prio := range byEnv {
			id := fmt.Sprintf("i%s%s%d", h.id, env[:3], n)
			h.open(event(fingerprintOf(id), id, 1, 1, namespaces[env], sev))
			exp = append(exp, expectation{namespaces[env], id, env, prio})
			n++
		}
	}
	ovID2 := "i" + h.id + "ovr"
	h.open(event(fingerprintOf(ovID2), ovID2, 1, 1, overridden, signal.SeverityCritical))
	exp = append(exp, expectation{overridden, ovID2, "production", "P0"})
	goneID := "i" + h.id + "gone"
	h.open(event(fingerprintOf(goneID), goneID, 1, 1, "gone-"+h.id, signal.SeverityWarning))
	h.waitAcked(n+2, 30*time.Second)

	for _, x := range exp {
		rr := get(t, x.ns, x.id)
		assert.Equal(t, x.env, rr.Spec.Environment, x.id)
		assert.Equal(t, x.prio, rr.Spec.Priority, "%s in %s", rr.Spec.Signal.Severity, x.env)
		assert.Equal(t, x.prio, rr.Labels[v1alpha1.LabelPriority])
		assert.Equal(t, x.env, rr.Labels[v1alpha1.LabelEnvironment])
		assert.Equal(t, string(rr.Spec.Signal.Severity), rr.Labels[v1alpha1.LabelSeverity])
		assert.Equal(t, "KubePodCrashLooping", rr.Labels[v1alpha1.LabelSignal])
		assert.Equal(t, fingerprintOf(x.id)[:32], rr.Labels[v1alpha1.LabelFingerprint])
		assert.Equal(t, fingerprintOf(x.id), rr.Spec.Fingerprint)
		assert.Equal(t, x.id, rr.Spec.IncidentID)
		assert.Equal(t, v1alpha1.Target{Kind: "Pod", Name: "api-0", Namespace: x.ns}, rr.Spec.Target)
		assert.Equal(t, v1alpha1.Source("alertmanager"), rr.Spec.Signal.Source)
		assert.Equal(t, "pod api-0 is crash looping", rr.Spec.Annotations["summary"])
		assert.False(t, rr.Spec.FiringTime.IsZero())
		assert.False(t, rr.Spec.ReceivedTime.IsZero())
		assert.NotContains(t, rr.Labels, v1alpha1.LabelOriginNamespace)
		if assert.NotNil(t, rr.Status.Occurrences) {
			assert.EqualValues(t, 1, rr.Status.Occurrences.Count)
		}
	}
	// A namespace that does not exist: the fallback, origin kept.
	rr := get(t, h.fallback, goneID)
	assert.Equal(t, "gone-"+h.id, rr.Labels[v1alpha1.LabelOriginNamespace])
	assert.Equal(t, "gone-"+h.id, rr.Annotations[v1alpha1.AnnotationOriginNamespace])
	assert.Equal(t, "unknown", rr.Spec.Environment)
	assert.Equal(t, "P2", rr.Spec.Priority)
}

func TestWriter_sameIncidentFiveTimesIsOneRequest(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	fp := fingerprintOf("five-" + h.id)
	id := "i" + h.id + "five"

	e := event(fp, id, 1, 1, ns, signal.SeverityCritical)
	for i := range 5 {
		// Distinct msg-ids, so JetStream delivers all five: a redelivery.
		h.publish(h.subj.IncidentsOpen(), e, id+":open:"+string(rune('a'+i)))
	}
	h.waitWritten(5, 20*time.Second)
	require.Len(t, list(t, ns), 1)
	rr := get(t, ns, id)
	require.NotNil(t, rr.Status.Occurrences)
	assert.EqualValues(t, 1, rr.Status.Occurrences.Count)
	assert.EqualValues(t, 1, rr.Status.ObservedRevision)
	assert.EqualValues(t, 1, counterValue(h.w.m.created))

	up := e
	up.Revision, up.Count = 2, 7
	h.update(up)
	h.waitWritten(6, 10*time.Second)
	rr = get(t, ns, id)
	assert.EqualValues(t, 7, rr.Status.Occurrences.Count)
	rv, writes := rr.ResourceVersion, h.writes()

	// The same absolute values again, and an older revision: no write.
	for i := range 5 {
		h.publish(h.subj.IncidentsUpdate(), up, id+":again:"+string(rune('a'+i)))
	}
	old := e
	old.Revision, old.Count = 1, 1
	h.publish(h.subj.IncidentsUpdate(), old, id+":old")
	h.waitWritten(12, 10*time.Second)
	rr = get(t, ns, id)
	assert.Equal(t, rv, rr.ResourceVersion, "repeats must not touch the request")
	assert.EqualValues(t, 7, rr.Status.Occurrences.Count)
	assert.Equal(t, writes, h.writes(), "repeats must not cost API writes")
	assert.EqualValues(t, 10, counterValue(h.w.m.skipped.WithLabelValues(skipStale)))
}

// TestWriter_everySourceBecomesARequest writes one incident of each signal
// source: the CRD's schema (spec.signal.source is an enum) accepts them all.
func TestWriter_everySourceBecomesARequest(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	sources := []signal.Source{signal.SourceAlertmanager, signal.SourceGrafana, signal.SourceKubernetesEvent}
	for i, src := range sources {
		id := fmt.Sprintf("i%ssrc%d", h.id, i)
		s := testSignal(fingerprintOf(id), id+"-sig", ns, signal.SeverityWarning)
		s.Source = src
		e := event(fingerprintOf(id), id, 1, 1, ns, signal.SeverityWarning)
		e.Signal = encoded(s)
		h.open(e)
	}
	h.waitAcked(len(sources), 30*time.Second)
	for i, src := range sources {
		rr := get(t, ns, fmt.Sprintf("i%ssrc%d", h.id, i))
		assert.Equal(t, v1alpha1.Source(src), rr.Spec.Signal.Source)
	}
}
