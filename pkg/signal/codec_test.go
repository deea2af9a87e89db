package signal

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEncode_roundTrip(t *testing.T) {
	d := newTestDecoder(t)
	var all []Signal
	for _, f := range []string{"alertmanager_firing.json", "alertmanager_resolved.json", "alertmanager_invalid_alerts.json"} {
		b, err := d.DecodeAlertmanager(readTestdata(t, f))
		require.NoError(t, err)
		all = append(all, b.Signals...)
	}
	for _, f := range []string{"k8s_eventlist.json", "k8s_events_array.json", "k8s_eventsv1_failedscheduling.json"} {
		b, err := d.DecodeKubernetesEvents(readTestdata(t, f))
		require.NoError(t, err)
		all = append(all, b.Signals...)
	}
	require.Len(t, all, 8+1+2+3+2+1)
	for _, s := range all {
		b, err := Encode(&s)
		require.NoError(t, err)
		std, err := json.Marshal(&s)
		require.NoError(t, err)
		assert.JSONEq(t, string(std), string(b), "the wire form is encoding/json's")

		var got Signal
		require.NoError(t, Decode(b, &got))
		assert.Equal(t, s, got)
	}
}

func TestDecode_invalid(t *testing.T) {
	var s Signal
	assert.Error(t, Decode([]byte(`{"id":`), &s))
	assert.Error(t, Decode([]byte(`{"startsAt":"yesterday"}`), &s))
}
