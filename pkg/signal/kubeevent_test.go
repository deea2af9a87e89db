package signal

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecoder_kubeEventWarning(t *testing.T) {
	b, err := newTestDecoder(t).DecodeKubernetesEvents(readTestdata(t, "k8s_event_warning_backoff.json"))
	require.NoError(t, err)
	require.Empty(t, b.Rejected)
	require.Len(t, b.Signals, 1)
	s := b.Signals[0]
	assert.Equal(t, SourceKubernetesEvent, s.Source)
	assert.Equal(t, "BackOff", s.Name)
	assert.Equal(t, StatusFiring, s.Status)
	assert.Equal(t, SeverityWarning, s.Severity)
	assert.Equal(t, "payments", s.Namespace)
	assert.Equal(t, Target{"Pod", "payments-api-7d9c8b6f5-x2k4q", "payments"}, s.Target)
	assert.Equal(t, int32(14), s.EventCount)
	assert.Equal(t, mustTime(t, "2025-03-14T09:19:02Z"), s.StartsAt)
	assert.Equal(t, mustTime(t, "2025-03-14T09:31:44Z"), s.EventLastTimestamp)
	assert.True(t, s.EndsAt.IsZero())
	assert.Equal(t, "6e0b1f6a-3c2d-4a8e-9f71-0d5c2b8e4a13", s.EventUID)
	assert.Equal(t, map[string]string{
		"reason":              "BackOff",
		"reporting_component": "kubelet",
		"host":                "ip-10-42-3-88.eu-west-1.compute.internal",
	}, s.Labels)
	assert.Equal(t, "Back-off restarting failed container api in pod payments-api-7d9c8b6f5-x2k4q_payments(3f1c2a9e-5b7d-4e21-9a0c-6d8f2b1e7c44)", s.Annotations["message"])
	assert.Equal(t, testNow, s.ReceivedAt)
	assert.Len(t, s.ID, 64)

	// DESIGN §2: reason + involvedObject (namespace/kind/name).
	byHand := Signal{Name: "BackOff", Namespace: "payments", Target: Target{"Pod", "payments-api-7d9c8b6f5-x2k4q", "payments"}}
	assert.Equal(t, MustFingerprinter(DefaultFingerprintFields).Fingerprint(&byHand), s.Fingerprint)
}

func TestDecoder_kubeEventNormalIgnored(t *testing.T) {
	b, err := newTestDecoder(t).DecodeKubernetesEvents(readTestdata(t, "k8s_event_normal.json"))
	require.NoError(t, err)
	assert.Empty(t, b.Signals)
	assert.Empty(t, b.Rejected)
	assert.Equal(t, 1, b.Ignored)
}

func TestDecoder_eventsV1Series(t *testing.T) {
	b, err := newTestDecoder(t).DecodeKubernetesEvents(readTestdata(t, "k8s_eventsv1_failedscheduling.json"))
	require.NoError(t, err)
	require.Empty(t, b.Rejected)
	require.Len(t, b.Signals, 1)
	s := b.Signals[0]
	assert.Equal(t, "FailedScheduling", s.Name)
	assert.Equal(t, Target{"Pod", "search-indexer-2", "search"}, s.Target)
	assert.Equal(t, "search", s.Namespace)
	assert.Equal(t, int32(23), s.EventCount, "series.count")
	assert.Equal(t, mustTime(t, "2025-03-14T08:55:10.204417Z"), s.StartsAt, "eventTime when no first timestamp")
	assert.Equal(t, mustTime(t, "2025-03-14T09:30:12.918533Z"), s.EventLastTimestamp, "series.lastObservedTime")
	assert.Equal(t, "default-scheduler", s.Labels["reporting_component"])
	assert.True(t, strings.HasPrefix(s.Annotations["message"], "0/6 nodes are available"), "note is the message")
}

func TestDecoder_kubeEventList(t *testing.T) {
	tests := []struct {
		file    string
		names   []string
		ignored int
	}{
		{"k8s_eventlist.json", []string{"BackOff", "FailedMount", "FailedCreate"}, 3},
		{"k8s_events_array.json", []string{"FailedMount", "FailedScheduling"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeKubernetesEvents(readTestdata(t, tt.file))
			require.NoError(t, err)
			assert.Empty(t, b.Rejected)
			assert.Equal(t, tt.ignored, b.Ignored)
			names := make([]string, 0, len(b.Signals))
			for _, s := range b.Signals {
				names = append(names, s.Name)
				assert.Equal(t, StatusFiring, s.Status)
				assert.NotEmpty(t, s.EventUID)
			}
			assert.Equal(t, tt.names, names)
		})
	}

	t.Run("FailedCreate on a ReplicaSet", func(t *testing.T) {
		b, err := newTestDecoder(t).DecodeKubernetesEvents(readTestdata(t, "k8s_eventlist.json"))
		require.NoError(t, err)
		require.Len(t, b.Signals, 3)
		s := b.Signals[2]
		assert.Equal(t, Target{"ReplicaSet", "checkout-web-6b8f7c5d4", "checkout"}, s.Target)
		assert.Equal(t, int32(31), s.EventCount)
		assert.Equal(t, "replicaset-controller", s.Labels["reporting_component"])
		_, hasHost := s.Labels["host"]
		assert.False(t, hasHost)
	})
}

// event is a core/v1 Warning event body with the given fields replaced.
func event(fields ...string) string {
	kv := map[string]string{
		"uid":            `"6e0b1f6a-3c2d-4a8e-9f71-0d5c2b8e4a13"`,
		"involvedObject": `{"kind":"Pod","namespace":"payments","name":"api-0"}`,
		"reason":         `"BackOff"`,
		"type":           `"Warning"`,
		"count":          `14`,
		"firstTimestamp": `"2025-03-14T09:19:02Z"`,
		"lastTimestamp":  `"2025-03-14T09:31:44Z"`,
	}
	for i := 0; i+1 < len(fields); i += 2 {
		kv[fields[i]] = fields[i+1]
	}
	var b strings.Builder
	b.WriteString(`{"kind":"Event","apiVersion":"v1","metadata":{"name":"api-0.182c7a1f5e0d3b9a","namespace":"payments"`)
	if kv["uid"] != "" {
		b.WriteString(`,"uid":` + kv["uid"])
	}
	b.WriteString(`}`)
	for _, k := range []string{"involvedObject", "reason", "type", "count", "firstTimestamp", "lastTimestamp"} {
		if kv[k] != "" {
			b.WriteString(`,"` + k + `":` + kv[k])
		}
	}
	b.WriteString(`}`)
	return b.String()
}

func TestDecoder_kubeEventID(t *testing.T) {
	idOf := func(t *testing.T, body string) string {
		t.Helper()
		b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(body))
		require.NoError(t, err)
		require.Empty(t, b.Rejected)
		require.Len(t, b.Signals, 1)
		return b.Signals[0].ID
	}
	base := idOf(t, event())
	assert.Equal(t, base, idOf(t, event()), "the same delivery twice has the same ID")
	assert.Equal(t, base, idOf(t, "["+event()+"]"), "as a single event or in an array")
	assert.Equal(t, base, idOf(t, event("lastTimestamp", `"2025-03-14T10:31:44+01:00"`)), "the same instant")
	assert.NotEqual(t, base, idOf(t, event("count", "15")), "count changed")
	assert.NotEqual(t, base, idOf(t, event("lastTimestamp", `"2025-03-14T09:32:44Z"`)), "lastTimestamp changed")
	assert.NotEqual(t, base, idOf(t, event("uid", `"00000000-0000-0000-0000-000000000001"`)), "another event")
	withoutUID := idOf(t, event("uid", ""))
	assert.NotEqual(t, base, withoutUID, "namespace/name stands in for the uid")
	assert.Equal(t, withoutUID, idOf(t, event("uid", "")))
}

func TestDecoder_kubeEventRejectsOneEvent(t *testing.T) {
	tests := []struct {
		name   string
		event  string
		reason string
	}{
		{"unknown type", event("type", `"Error"`), `"Error"`},
		{"no involved object", event("involvedObject", ""), "involved object"},
		{"involved object without name", event("involvedObject", `{"kind":"Pod"}`), "involved object"},
		{"no reason", event("reason", ""), "missing name"},
		{"count not a number", event("count", `"14"`), "count"},
		{"count overflows int32", event("count", `4294967296`), "count"},
		{"lastTimestamp not a time", event("lastTimestamp", `"14 Mar 2025"`), "14 Mar 2025"},
		{"not an Event", strings.Replace(event(), `"kind":"Event"`, `"kind":"Pod"`, 1), `kind "Pod"`},
		{"no uid nor name", `{"type":"Warning","reason":"BackOff","involvedObject":{"kind":"Pod","name":"x"}}`, "neither metadata.uid nor metadata.name"},
		{"not an object", `"BackOff"`, "string"},
	}
	good := event()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"kind":"EventList","apiVersion":"v1","items":[` + good + `,` + tt.event + `,` + good + `]}`
			b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(body))
			require.NoError(t, err)
			assert.Len(t, b.Signals, 2, "the siblings are kept")
			require.Len(t, b.Rejected, 1)
			assert.Equal(t, 1, b.Rejected[0].Index)
			assert.Contains(t, b.Rejected[0].Reason, tt.reason)
		})
	}
}

func TestDecoder_kubeEventInvalidPayload(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ``},
		{"blank", " \n"},
		{"not JSON", `Event BackOff on pod/api-0`},
		{"null", `null`},
		{"number", `42`},
		{"string", `"BackOff"`},
		{"truncated object", `{"kind":"Event","type":"Warning"`},
		{"truncated array", `[{"kind":"Event"}`},
		{"items not an array", `{"kind":"EventList","items":{"a":{}}}`},
		{"kind not a string", `{"kind":1,"items":[]}`},
		{"trailing garbage", `[] []`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(tt.body))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrInvalidPayload), "%v wraps ErrInvalidPayload", err)
			assert.Nil(t, b)
		})
	}

	t.Run("empty list", func(t *testing.T) {
		for _, body := range []string{`[]`, `{"kind":"EventList","apiVersion":"v1","items":[]}`, `{"kind":"List","items":null}`} {
			b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(body))
			require.NoError(t, err, body)
			assert.Empty(t, b.Signals, body)
			assert.Empty(t, b.Rejected, body)
		}
	})
}

func TestDecoder_kubeEventTimesAreUTC(t *testing.T) {
	b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(event("firstTimestamp", `"2025-03-14T10:19:02+01:00"`)))
	require.NoError(t, err)
	require.Len(t, b.Signals, 1)
	assert.Equal(t, time.UTC, b.Signals[0].StartsAt.Location())
	assert.Equal(t, mustTime(t, "2025-03-14T09:19:02Z"), b.Signals[0].StartsAt)
}
