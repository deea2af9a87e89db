package signal

import (
	"bytes"
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
	assert.Len(t, b.Ignored, 1)
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
			assert.Len(t, b.Ignored, tt.ignored)
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
	assert.Equal(t, base, idOf(t, event("count", `"14"`)), "the count as a string of digits")
	assert.Equal(t, base, idOf(t, event("lastTimestamp", `"2025-03-14 09:31:44 +0000 UTC"`)), "the time in Go's format")
	assert.Equal(t, base, idOf(t, event("lastTimestamp", `"2025-03-14 10:31:44.0 +0100 CET m=+0.000000001"`)), "Go's format with a zone and a monotonic reading")
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
		{"count not a number", event("count", `"fourteen"`), `count "fourteen"`},
		{"count a fraction", event("count", `"1.5"`), "count"},
		{"count overflows int32", event("count", `4294967296`), "count"},
		{"lastTimestamp not a time", event("lastTimestamp", `"14 Mar 2025"`), "14 Mar 2025"},
		{"not an Event", strings.Replace(event(), `"kind":"Event"`, `"kind":"Pod"`, 1), `kind "Pod"`},
		{"no uid nor name", `{"type":"Warning","reason":"BackOff","involvedObject":{"kind":"Pod","name":"x"}}`, "neither metadata.uid nor metadata.name"},
		{"not an object", `"BackOff"`, "string"},
		{"kind longer than the CRD holds", event("involvedObject", `{"kind":"`+strings.Repeat("K", 64)+`","name":"x"}`), "target kind"},
		{"namespace of 64 characters", event("involvedObject", `{"kind":"Pod","name":"x","namespace":"`+strings.Repeat("n", 64)+`"}`), "at most 63 characters"},
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

// exporterFixture reads a body posted by kubernetes-event-exporter v1.6.1
// (captured from a real exporter watching a real API server).
func exporterFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	return readTestdata(tb, "kubernetes-event-exporter-v1.6.1/"+name)
}

func TestDecoder_kubernetesEventExporterDefaultBody(t *testing.T) {
	tests := []struct {
		file   string
		name   string
		target Target
	}{
		{"default-warning-backoff.json", "BackOff", Target{"Pod", "api-1", "payments"}},
		{"default-warning-failedscheduling.json", "FailedScheduling", Target{"Pod", "web-2", "prod"}},
		{"default-warning-unhealthy.json", "Unhealthy", Target{"Pod", "web-3", "prod"}},
	}
	fp := MustFingerprinter(DefaultFingerprintFields)
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeKubernetesEvents(exporterFixture(t, tt.file))
			require.NoError(t, err)
			require.Empty(t, b.Rejected)
			require.Len(t, b.Signals, 1)
			s := b.Signals[0]
			assert.Equal(t, tt.name, s.Name)
			assert.Equal(t, tt.target, s.Target)
			assert.Equal(t, tt.target.Namespace, s.Namespace)
			assert.Equal(t, int32(1), s.EventCount)
			assert.Equal(t, "evx-envtest", s.Labels["cluster"], "the exporter's clusterName is the cluster label")
			byHand := Signal{Name: tt.name, Namespace: tt.target.Namespace, Target: tt.target, Labels: map[string]string{"cluster": "evx-envtest"}}
			assert.Equal(t, fp.Fingerprint(&byHand), s.Fingerprint, "the cluster is part of the fingerprint")
		})
	}
	for _, file := range []string{"default-normal-pulled.json", "default-normal-scheduled.json"} {
		t.Run(file, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeKubernetesEvents(exporterFixture(t, file))
			require.NoError(t, err)
			assert.Empty(t, b.Signals)
			assert.Empty(t, b.Rejected)
			assert.Len(t, b.Ignored, 1, "Normal events are ignored")
		})
	}
}

func TestDecoder_kubernetesEventExporterClustersAreApart(t *testing.T) {
	body := exporterFixture(t, "default-warning-backoff.json")
	other := bytes.Replace(body, []byte(`"clusterName": "evx-envtest"`), []byte(`"clusterName": "prod-us-2"`), 1)
	require.NotEqual(t, body, other)
	d := newTestDecoder(t)
	a, err := d.DecodeKubernetesEvents(body)
	require.NoError(t, err)
	b, err := d.DecodeKubernetesEvents(other)
	require.NoError(t, err)
	require.Len(t, a.Signals, 1)
	require.Len(t, b.Signals, 1)
	assert.NotEqual(t, a.Signals[0].Fingerprint, b.Signals[0].Fingerprint, "the same reason on the same pod in two clusters is two incidents")

	// A cluster label the sender set itself wins over clusterName.
	labelled := bytes.Replace(body, []byte(`"namespace": "payments",`), []byte(`"namespace": "payments", "labels": {"cluster": "prod-us-2"},`), 1)
	c, err := d.DecodeKubernetesEvents(labelled)
	require.NoError(t, err)
	require.Len(t, c.Signals, 1)
	assert.Equal(t, "prod-us-2", c.Signals[0].Labels["cluster"])
	assert.Equal(t, b.Signals[0].Fingerprint, c.Signals[0].Fingerprint)
}

func TestDecoder_kubernetesEventExporterLayouts(t *testing.T) {
	tests := []struct {
		file  string
		count int32
		at    string
	}{
		// Every value a string: count "1", times in Go's format.
		{"layout-naive-warning-backoff.json", 1, "2026-11-29T21:34:52Z"},
		// No count at all, times in RFC 3339.
		{"layout-rfc3339-warning-backoff.json", 1, "2026-11-29T21:35:48Z"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeKubernetesEvents(exporterFixture(t, tt.file))
			require.NoError(t, err)
			require.Empty(t, b.Rejected)
			require.Len(t, b.Signals, 1)
			s := b.Signals[0]
			assert.Equal(t, "BackOff", s.Name)
			assert.Equal(t, Target{"Pod", "api-1", "payments"}, s.Target)
			assert.Equal(t, tt.count, s.EventCount)
			assert.Equal(t, mustTime(t, tt.at), s.StartsAt)
			assert.Equal(t, mustTime(t, tt.at), s.EventLastTimestamp)
			assert.Equal(t, "evx-envtest", s.Labels["cluster"])
		})
	}
}

func TestDecoder_kubeEventCountAsString(t *testing.T) {
	tests := []struct {
		count string
		want  int32
	}{
		{`"7"`, 7},
		{`7`, 7},
		{`""`, 1},
		{`null`, 1},
		{`"2147483647"`, 2147483647},
	}
	for _, tt := range tests {
		t.Run(tt.count, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(event("count", tt.count)))
			require.NoError(t, err)
			require.Empty(t, b.Rejected)
			require.Len(t, b.Signals, 1)
			assert.Equal(t, tt.want, b.Signals[0].EventCount)
		})
	}
	t.Run("series.count as a string", func(t *testing.T) {
		body := strings.Replace(event(), `"reason"`, `"series":{"count":"23","lastObservedTime":"2025-03-14 09:40:00 +0000 UTC"},"reason"`, 1)
		b, err := newTestDecoder(t).DecodeKubernetesEvents([]byte(body))
		require.NoError(t, err)
		require.Len(t, b.Signals, 1, "%v", b.Rejected)
		assert.Equal(t, int32(23), b.Signals[0].EventCount)
		assert.Equal(t, mustTime(t, "2025-03-14T09:40:00Z"), b.Signals[0].EventLastTimestamp)
	})
}
