package crdcheck_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/crdcheck"
)

func validRequest() *v1alpha1.RemediationRequest {
	now := metav1.NewTime(time.Date(2026, 3, 14, 9, 21, 37, 0, time.UTC))
	return &v1alpha1.RemediationRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "RemediationRequest"},
		ObjectMeta: metav1.ObjectMeta{Name: "rr-i0123", Namespace: "payments", Labels: map[string]string{v1alpha1.LabelSeverity: "critical"}},
		Spec: v1alpha1.RemediationRequestSpec{
			Fingerprint: strings.Repeat("f", 64), IncidentID: "i0123",
			Signal:      v1alpha1.SignalRef{Name: "KubePodCrashLooping", Source: "alertmanager", Severity: "critical"},
			Target:      v1alpha1.Target{Kind: "Pod", Name: "api-1", Namespace: "payments"},
			Environment: "production", Priority: "P0", FiringTime: now, ReceivedTime: now,
		},
		Status: v1alpha1.RemediationRequestStatus{
			ObservedRevision: 1,
			Occurrences:      &v1alpha1.Occurrences{Count: 1, FirstSeen: now, LastSeen: now},
			Signal:           &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring},
		},
	}
}

func TestValidator_acceptsAValidRequest(t *testing.T) {
	v, err := crdcheck.RemediationRequests()
	require.NoError(t, err)
	assert.NoError(t, v.Validate(validRequest()))
}

// Each case is a request the API server refuses with 422 Invalid
// (pkg/writer's TestRemediationRequestCRD_rejectsInvalidObjects shows the
// API server's side for the schema's cases).
func TestValidator_refusesWhatTheAPIServerRefuses(t *testing.T) {
	v, err := crdcheck.RemediationRequests()
	require.NoError(t, err)
	cases := map[string]struct {
		mutate func(rr *v1alpha1.RemediationRequest)
		want   string
	}{
		"target namespace of 64 characters": {func(rr *v1alpha1.RemediationRequest) {
			rr.Spec.Target.Namespace = strings.Repeat("n", 64)
		}, "spec.target.namespace"},
		"priority P9":    {func(rr *v1alpha1.RemediationRequest) { rr.Spec.Priority = "P9" }, "spec.priority"},
		"severity fatal": {func(rr *v1alpha1.RemediationRequest) { rr.Spec.Signal.Severity = "fatal" }, "spec.signal.severity"},
		"empty signal name": {func(rr *v1alpha1.RemediationRequest) {
			rr.Spec.Signal.Name = ""
		}, "spec.signal.name"},
		"too many labels": {func(rr *v1alpha1.RemediationRequest) {
			rr.Spec.Labels = map[string]string{}
			for i := range 65 {
				rr.Spec.Labels[string(rune('a'+i%26))+string(rune('a'+i/26))] = "x"
			}
		}, "spec.labels"},
		"label value of 64 characters": {func(rr *v1alpha1.RemediationRequest) {
			rr.Labels[v1alpha1.LabelSignal] = strings.Repeat("x", 64)
		}, "metadata.labels"},
		"namespace not a DNS label": {func(rr *v1alpha1.RemediationRequest) {
			rr.Namespace = "Team_Payments.Prod"
		}, "metadata.namespace"},
		"no namespace": {func(rr *v1alpha1.RemediationRequest) { rr.Namespace = "" }, "metadata.namespace"},
		"name not a DNS subdomain": {func(rr *v1alpha1.RemediationRequest) {
			rr.Name = "rr_i0123"
		}, "metadata.name"},
		"folded incidents with one id twice": {func(rr *v1alpha1.RemediationRequest) {
			f := v1alpha1.FoldedIncident{IncidentID: "i1", Count: 1}
			rr.Status.FoldedIncidents = []v1alpha1.FoldedIncident{f, f}
		}, "status.foldedIncidents"},
		"larger than etcd takes": {func(rr *v1alpha1.RemediationRequest) {
			rr.Spec.Annotations = map[string]string{"description": strings.Repeat("x", crdcheck.MaxObjectBytes)}
		}, "etcd"},
		"wrong kind": {func(rr *v1alpha1.RemediationRequest) { rr.Kind = "Remediation" }, "kind"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rr := validRequest()
			tc.mutate(rr)
			err := v.Validate(rr)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func BenchmarkValidator_Validate(b *testing.B) {
	v, err := crdcheck.RemediationRequests()
	require.NoError(b, err)
	rr := validRequest()
	for b.Loop() {
		if err := v.Validate(rr); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSignals_checksEveryRequestOfASignal(t *testing.T) {
	c, err := crdcheck.NewSignals()
	require.NoError(t, err)
	now := time.Date(2026, 3, 14, 9, 21, 37, 0, time.UTC)
	sig := func(ns string, target signal.Target) *signal.Signal {
		s := &signal.Signal{
			ID: "id-1", Fingerprint: strings.Repeat("a", 64), Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
			Status: signal.StatusFiring, Severity: signal.SeverityCritical, Namespace: ns, Target: target,
			Labels: map[string]string{"alertname": "KubePodCrashLooping", "namespace": ns}, StartsAt: now, ReceivedAt: now,
		}
		return s
	}
	long := strings.Repeat("n", 64)
	assert.NoError(t, c.Check(sig("payments", signal.Target{Kind: "Pod", Name: "api-1", Namespace: "payments"})))
	assert.NoError(t, c.Check(sig("Team_Payments.Prod", signal.Target{Kind: "Pod", Name: "api-1", Namespace: "Team_Payments.Prod"})),
		"a namespace that cannot exist goes to the fallback namespace")

	err = c.Check(sig(long, signal.Target{Kind: "Pod", Name: "api-1", Namespace: long}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.target.namespace")
	// A node's alert has no target namespace: only the storm's request,
	// which carries the alert's namespace, cannot be written.
	err = c.Check(sig(long, signal.Target{Kind: "Node", Name: "n1"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "storm's request")
}
