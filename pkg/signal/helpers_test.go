package signal

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testNow is the decoders' clock in tests: ReceivedAt of every signal.
var testNow = time.Date(2025, 3, 14, 9, 32, 0, 0, time.UTC)

func newTestDecoder(tb testing.TB) *Decoder {
	tb.Helper()
	return NewDecoder(MustFingerprinter(DefaultFingerprintFields), func() time.Time { return testNow })
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(tb, err)
	return b
}

func mustTime(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(tb, err)
	return t.UTC()
}

// testAlert is an Alertmanager alert as a test writes it.
type testAlert struct {
	Status       string            `json:"status,omitempty"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     string            `json:"startsAt,omitempty"`
	EndsAt       string            `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
	Fingerprint  string            `json:"fingerprint,omitempty"`
}

// amBody wraps raw alert JSON values in a version 4 webhook.
func amBody(tb testing.TB, alerts ...any) []byte {
	tb.Helper()
	raws := make([]json.RawMessage, 0, len(alerts))
	for _, a := range alerts {
		switch a := a.(type) {
		case string:
			raws = append(raws, json.RawMessage(a))
		default:
			b, err := json.Marshal(a)
			require.NoError(tb, err)
			raws = append(raws, b)
		}
	}
	b, err := json.Marshal(map[string]any{
		"receiver":          "stormweir",
		"status":            "firing",
		"alerts":            raws,
		"groupLabels":       map[string]string{},
		"commonLabels":      map[string]string{},
		"commonAnnotations": map[string]string{},
		"externalURL":       "http://alertmanager.monitoring.svc:9093",
		"version":           "4",
		"groupKey":          "{}:{}",
		"truncatedAlerts":   0,
	})
	require.NoError(tb, err)
	return b
}

// crashLooping is a kube-state-metrics KubePodCrashLooping alert.
func crashLooping() testAlert {
	return testAlert{
		Status: "firing",
		Labels: map[string]string{
			"alertname": "KubePodCrashLooping", "cluster": "prod-eu-1", "container": "api",
			"job": "kube-state-metrics", "namespace": "payments", "pod": "payments-api-7d9c8b6f5-x2k4q",
			"reason": "CrashLoopBackOff", "severity": "warning",
		},
		Annotations:  map[string]string{"summary": "Pod is crash looping."},
		StartsAt:     "2025-03-14T09:21:37.512Z",
		EndsAt:       "0001-01-01T00:00:00Z",
		GeneratorURL: "http://prometheus-k8s-0:9090/graph?g0.expr=up&g0.tab=1",
		Fingerprint:  "5a1f0c93d2b8e417",
	}
}

// byIndex returns the rejections keyed by batch index.
func byIndex(rs []Rejection) map[int]Rejection {
	m := make(map[int]Rejection, len(rs))
	for _, r := range rs {
		m[r.Index] = r
	}
	return m
}
