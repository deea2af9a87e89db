package writer

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
)

// The typed apply configuration names exactly the fields a JSON encoding
// of the status names (what the apply sent before it was typed), zero
// values and empty lists included or left out alike.
func TestStatusApply_namesWhatTheStatusJSONNames(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	later := metav1.NewTime(at.Add(time.Minute))
	cases := map[string]v1alpha1.RemediationRequestStatus{
		"empty": {},
		"zero values": {
			Occurrences: &v1alpha1.Occurrences{}, Signal: &v1alpha1.SignalStatus{}, Storm: &v1alpha1.StormStatus{},
			FoldedIncidents: []v1alpha1.FoldedIncident{{}},
		},
		"incident": {
			Phase: "Running", ObservedRevision: 7,
			Occurrences:     &v1alpha1.Occurrences{Count: 12, FirstSeen: at, LastSeen: later, Flaps: 2},
			Signal:          &v1alpha1.SignalStatus{State: v1alpha1.SignalResolved, ResolvedAt: &later},
			FoldedIncidents: []v1alpha1.FoldedIncident{{IncidentID: "i2", Count: 3, LastSeen: later, ObservedRevision: 4}, {IncidentID: "i3", Count: 1}},
		},
		"storm": {
			ObservedRevision: 9,
			Occurrences:      &v1alpha1.Occurrences{Count: 900, FirstSeen: at, LastSeen: later},
			Signal:           &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring},
			Storm: &v1alpha1.StormStatus{Members: 150, Occurrences: 900, AffectedTotal: 150, ClosedAt: &later,
				Affected: []v1alpha1.Target{{Kind: "Pod", Name: "a", Namespace: "prod"}, {Kind: "Node", Name: "n1"}, {}}},
		},
	}
	key := types.NamespacedName{Namespace: "prod", Name: "rr-i1"}
	for name, st := range cases {
		t.Run(name, func(t *testing.T) {
			own := owned(&st)
			status, err := json.Marshal(&own)
			require.NoError(t, err)
			want := `{"apiVersion":"stormweir.io/v1alpha1","kind":"RemediationRequest",` +
				`"metadata":{"name":"rr-i1","namespace":"prod"},"status":` + string(status) + `}`
			got, err := json.Marshal(statusApply(key, &st))
			require.NoError(t, err)
			assert.JSONEq(t, want, string(got))
		})
	}
}
