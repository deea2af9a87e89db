package writer

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
