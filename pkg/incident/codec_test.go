package incident_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// The codec must write what encoding/json writes and read it back
// unchanged: stages of different versions share the bus.
func TestCodec_matchesEncodingJSON(t *testing.T) {
	now := time.Date(2026, 11, 26, 15, 4, 5, 123456789, time.UTC)
	sig := signal.Signal{
		ID: "a1", Fingerprint: "f1", Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
		Status: signal.StatusFiring, Severity: signal.SeverityCritical, Namespace: "prod",
		Target:      signal.Target{Kind: "Pod", Name: "api-0", Namespace: "prod"},
		Labels:      map[string]string{"alertname": "KubePodCrashLooping", "pod": "api-0", "quote": "\"<&>\""},
		Annotations: map[string]string{"summary": "crash looping ✓"},
		StartsAt:    now.Add(-time.Minute), ReceivedAt: now,
	}
	raw, err := signal.Encode(&sig)
	require.NoError(t, err)
	cases := map[string]struct{ in, out any }{
		"event": {
			in: &incident.Event{Decision: incident.DecisionResolved, IncidentID: "i1", Fingerprint: "f1", Revision: 7,
				State: incident.StateResolved, Count: 3, Flaps: 1, FirstSeen: now, LastSeen: now, ResolvedAt: now,
				Route: incident.RouteIndividual, Signal: raw},
			out: &incident.Event{},
		},
		"event without optional fields": {in: &incident.Event{IncidentID: "i2", Signal: raw}, out: &incident.Event{}},
		"storm": {
			in: &incident.Storm{Phase: incident.StormUpdated, StormID: "s1", Fingerprint: "f", Scope: map[string]string{"alertname": "X", "namespace": "prod"},
				Type: incident.StormRate, Revision: 9, DetectedAt: now, LastSeen: now, Members: 12, Occurrences: 40,
				Affected: []signal.Target{{Kind: "Pod", Name: "a", Namespace: "prod"}}, AffectedTotal: 12, Signal: raw},
			out: &incident.Storm{},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := incident.Marshal(c.in)
			require.NoError(t, err)
			want, err := json.Marshal(c.in)
			require.NoError(t, err)
			assert.JSONEq(t, string(want), string(got))
			require.NoError(t, incident.Unmarshal(got, c.out))
			assert.Equal(t, c.in, c.out)
		})
	}
}

// An event carries its signal as the bytes the receiver encoded: encoding
// the event copies them, it does not encode the signal again, and what
// every stage reads back is the signal the receiver published.
func TestCodec_carriesTheSignalAsEncoded(t *testing.T) {
	sig := signal.Signal{ID: "a1", Fingerprint: "f1", Name: "X", Status: signal.StatusFiring,
		Labels: map[string]string{"b": "2", "a": "1"}, ReceivedAt: time.Date(2026, 11, 26, 15, 4, 5, 0, time.UTC)}
	raw, err := signal.Encode(&sig)
	require.NoError(t, err)
	data, err := incident.Marshal(&incident.Event{IncidentID: "i1", Fingerprint: "f1", Signal: raw})
	require.NoError(t, err)
	assert.Contains(t, string(data), `"signal":`+string(raw))

	var ev incident.Event
	require.NoError(t, incident.Unmarshal(data, &ev))
	assert.Equal(t, string(raw), string(ev.Signal))
	var back signal.Signal
	require.NoError(t, signal.Decode(ev.Signal, &back))
	assert.Equal(t, sig, back)
	var head signal.Head
	require.NoError(t, signal.DecodeHead(ev.Signal, &head))
	assert.Equal(t, sig.Head(), head)
}
