package writer

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/test/testenv"
)

func validRequest(ns string) *v1alpha1.RemediationRequest {
	now := metav1.NewTime(time.Now())
	return &v1alpha1.RemediationRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "rr-", Namespace: ns},
		Spec: v1alpha1.RemediationRequestSpec{
			Fingerprint: fingerprintOf("crd"), IncidentID: "i0123",
			Signal:      v1alpha1.SignalRef{Name: "KubePodCrashLooping", Source: "alertmanager", Severity: "critical"},
			Environment: "production", Priority: "P0", FiringTime: now, ReceivedTime: now,
		},
	}
}

func TestRemediationRequestCRD_rejectsInvalidObjects(t *testing.T) {
	ctx := context.Background()
	h := &harness{t: t}
	ns := h.namespace("crd-"+testenv.RandomID()[:8], nil)

	require.NoError(t, admin.Create(ctx, validRequest(ns)), "a valid request is accepted")

	cases := map[string]func(rr *v1alpha1.RemediationRequest){
		"priority P9":         func(rr *v1alpha1.RemediationRequest) { rr.Spec.Priority = "P9" },
		"severity fatal":      func(rr *v1alpha1.RemediationRequest) { rr.Spec.Signal.Severity = "fatal" },
		"source unknown":      func(rr *v1alpha1.RemediationRequest) { rr.Spec.Signal.Source = "pagerduty" },
		"missing fingerprint": func(rr *v1alpha1.RemediationRequest) { rr.Spec.Fingerprint = "" },
		"storm type unknown": func(rr *v1alpha1.RemediationRequest) {
			rr.Spec.Storm = &v1alpha1.StormSpec{Type: "cascade", DetectedAt: metav1.Now()}
		},
		"too many labels": func(rr *v1alpha1.RemediationRequest) {
			rr.Spec.Labels = map[string]string{}
			for i := range 65 {
				rr.Spec.Labels[string(rune('a'+i%26))+string(rune('a'+i/26))] = "x"
			}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			rr := validRequest(ns)
			mutate(rr)
			err := admin.Create(ctx, rr)
			require.Error(t, err)
			assert.True(t, apierrors.IsInvalid(err), "want 422 Invalid, got %v", err)
		})
	}
}

// Status is not a subresource, so the create carries status, and the
// spec's immutability rule is what keeps status writers off the spec.
func TestRemediationRequestCRD_createCarriesStatusAndSpecIsImmutable(t *testing.T) {
	ctx := context.Background()
	h := &harness{t: t}
	ns := h.namespace("crd-"+testenv.RandomID()[:8], nil)

	rr := validRequest(ns)
	rr.Status = v1alpha1.RemediationRequestStatus{
		ObservedRevision: 1,
		Occurrences:      &v1alpha1.Occurrences{Count: 1, FirstSeen: rr.Spec.ReceivedTime, LastSeen: rr.Spec.ReceivedTime},
		Signal:           &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring},
	}
	require.NoError(t, admin.Create(ctx, rr))
	var got v1alpha1.RemediationRequest
	require.NoError(t, admin.Get(ctx, client.ObjectKeyFromObject(rr), &got))
	require.NotNil(t, got.Status.Occurrences, "the create's status is stored")
	assert.EqualValues(t, 1, got.Status.Occurrences.Count)
	assert.EqualValues(t, 1, got.Status.ObservedRevision)

	changed := got.DeepCopy()
	changed.Spec.Priority = "P3"
	err := admin.Update(ctx, changed)
	require.Error(t, err, "spec must not change")
	assert.True(t, apierrors.IsInvalid(err), "want 422 Invalid, got %v", err)
	assert.Contains(t, err.Error(), "spec is immutable")

	changed = got.DeepCopy()
	changed.Status.Phase = "Running"
	changed.Labels = map[string]string{"team": "sre"}
	require.NoError(t, admin.Update(ctx, changed), "status and metadata may change")
}
