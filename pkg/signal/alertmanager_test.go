package signal

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecoder_alertmanagerBatch(t *testing.T) {
	b, err := newTestDecoder(t).DecodeAlertmanager(readTestdata(t, "alertmanager_firing.json"))
	require.NoError(t, err)
	require.Empty(t, b.Rejected)
	require.Len(t, b.Signals, 8, "every alert of the batch is its own signal")
	assert.Equal(t, 3, b.Truncated)
	assert.Empty(t, b.Ignored)

	firing, resolved := StatusFiring, StatusResolved
	tests := []struct {
		name      string
		status    Status
		severity  Severity
		namespace string
		target    Target
		startsAt  string
		endsAt    string
		amFP      string
	}{
		{"KubePodCrashLooping", firing, SeverityWarning, "payments", Target{"Pod", "payments-api-7d9c8b6f5-x2k4q", "payments"}, "2025-03-14T09:21:37.512Z", "", "5a1f0c93d2b8e417"},
		{"KubePodCrashLooping", resolved, SeverityWarning, "payments", Target{"Pod", "payments-worker-5c6b9d7f8-q7m2z", "payments"}, "2025-03-14T08:02:07.512Z", "2025-03-14T09:17:37.512Z", "c04e8b2d71f9a365"},
		{"KubeDeploymentReplicasMismatch", firing, SeverityWarning, "checkout", Target{"Deployment", "checkout-web", "checkout"}, "2025-03-14T09:05:52.104Z", "", "e7d2a4c8905b1f36"},
		{"KubeNodeNotReady", firing, SeverityCritical, "", Target{Kind: "Node", Name: "ip-10-42-7-19.eu-west-1.compute.internal"}, "2025-03-14T09:12:22.918Z", "", "18b6f3e0a9c4d275"},
		// Scraped without honor_labels: the series' own pod and namespace
		// are in exported_*, pod/namespace are kube-state-metrics' own.
		{"KubePodNotReady", firing, SeverityWarning, "search", Target{"Pod", "search-indexer-0", "search"}, "2025-03-14T08:58:01.337Z", "", "2c9a7e5f14b0d863"},
		// job="kube-state-metrics" is the scrape job, job_name the Job.
		{"KubeJobFailed", firing, SeverityWarning, "payments", Target{"Job", "nightly-ledger-reconcile-29031840", "payments"}, "2025-03-14T04:15:37.512Z", "", "9f3d1b7c6a0e2548"},
		// severity="major" is unknown: warning, and kept in the labels.
		{"KubeStatefulSetReplicasMismatch", firing, SeverityWarning, "search", Target{"StatefulSet", "opensearch-data", "search"}, "2025-03-14T09:01:07.512Z", "", "4b8e2f6d0c1a9375"},
		// No target label at all: zero target, fingerprint still defined.
		{"KubeAPIErrorBudgetBurn", firing, SeverityCritical, "", Target{}, "2025-03-14T09:19:52.104Z", "", "d35a0e9c7b2f6148"},
	}
	fp := MustFingerprinter(DefaultFingerprintFields)
	ids := map[string]bool{}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%d_%s", i, tt.name), func(t *testing.T) {
			s := b.Signals[i]
			assert.Equal(t, SourceAlertmanager, s.Source)
			assert.Equal(t, tt.name, s.Name)
			assert.Equal(t, tt.status, s.Status)
			assert.Equal(t, tt.severity, s.Severity)
			assert.Equal(t, tt.namespace, s.Namespace)
			assert.Equal(t, tt.target, s.Target)
			assert.Equal(t, mustTime(t, tt.startsAt), s.StartsAt)
			if tt.endsAt == "" {
				assert.True(t, s.EndsAt.IsZero(), "a firing alert's 0001-01-01 endsAt is the zero time")
			} else {
				assert.Equal(t, mustTime(t, tt.endsAt), s.EndsAt)
			}
			assert.Equal(t, tt.amFP, s.AlertmanagerFP)
			assert.Equal(t, testNow, s.ReceivedAt)
			assert.Equal(t, `{}/{severity=~"warning|critical|major"}:{cluster="prod-eu-1"}`, s.GroupKey)
			assert.Equal(t, "http://alertmanager-main-0.alertmanager-operated.monitoring.svc:9093", s.AlertmanagerExternal)
			assert.Equal(t, 3, s.TruncatedAlerts)
			assert.Equal(t, tt.name, s.Labels["alertname"])
			assert.Equal(t, "prod-eu-1", s.Labels["cluster"])
			assert.NotEmpty(t, s.Annotations["summary"])
			assert.True(t, strings.HasPrefix(s.GeneratorURL, "http://prometheus-k8s-"))

			want := Signal{Name: tt.name, Namespace: tt.namespace, Target: tt.target, Labels: map[string]string{"cluster": "prod-eu-1"}}
			assert.Equal(t, fp.Fingerprint(&want), s.Fingerprint)
			assert.Len(t, s.ID, 64)
			assert.False(t, ids[s.ID], "IDs are unique within a batch")
			ids[s.ID] = true
		})
	}
	assert.Equal(t, "major", b.Signals[6].Labels["severity"], "the unknown severity stays in the labels")
}

func TestDecoder_alertmanagerRejectsInvalidAlerts(t *testing.T) {
	b, err := newTestDecoder(t).DecodeAlertmanager(readTestdata(t, "alertmanager_invalid_alerts.json"))
	require.NoError(t, err, "bad alerts never fail the whole batch")
	require.Len(t, b.Signals, 2)
	assert.Equal(t, "KubeContainerWaiting", b.Signals[0].Name)
	assert.Equal(t, "KubePersistentVolumeFillingUp", b.Signals[1].Name)
	assert.Equal(t, StatusResolved, b.Signals[1].Status)
	assert.Equal(t, Target{"PersistentVolumeClaim", "data-orders-db-0", "orders"}, b.Signals[1].Target)

	require.Len(t, b.Rejected, 3)
	rej := byIndex(b.Rejected)
	assert.Contains(t, rej[1].Reason, "missing name")
	assert.Equal(t, "KubeHpaMaxedOut", rej[2].Name)
	assert.Contains(t, rej[2].Reason, `status "pending"`)
	assert.Contains(t, rej[3].Reason, "labels")
	assert.Contains(t, rej[3].Reason, "replicas", "the reason names the offending label")
	assert.Contains(t, rej[3].Reason, "string")
}

func TestDecoder_alertmanagerRejectsOneAlert(t *testing.T) {
	good := crashLooping()
	withLabel := func(k, v string) testAlert {
		a := crashLooping()
		a.Labels = map[string]string{}
		for lk, lv := range good.Labels {
			a.Labels[lk] = lv
		}
		a.Labels[k] = v
		return a
	}
	manyLabels := crashLooping()
	manyLabels.Labels = map[string]string{"alertname": "TooManyLabels"}
	for i := range MaxLabels {
		manyLabels.Labels[fmt.Sprintf("l%03d", i)] = "v"
	}
	tests := []struct {
		name   string
		alert  any
		reason string
	}{
		{"labels not an object", `{"status":"firing","labels":["alertname","X"],"startsAt":"2025-03-14T09:21:37Z"}`, "labels"},
		{"label value not a string", `{"status":"firing","labels":{"alertname":"X","replicas":3}}`, "replicas"},
		{"annotation value not a string", `{"status":"firing","labels":{"alertname":"X"},"annotations":{"value":0.97}}`, "value"},
		{"startsAt not a time", `{"status":"firing","labels":{"alertname":"X"},"startsAt":"yesterday"}`, "yesterday"},
		{"startsAt a number", `{"status":"firing","labels":{"alertname":"X"},"startsAt":1710408097}`, "1710408097"},
		{"alert not an object", `42`, "number"},
		{"alert null", `null`, "missing name"},
		{"status unknown", `{"status":"suppressed","labels":{"alertname":"X"}}`, `"suppressed"`},
		{"year 0", `{"status":"firing","labels":{"alertname":"X"},"startsAt":"0000-06-01T00:00:00Z"}`, "timestamp out of range"},
		{"name too long", withLabel("alertname", strings.Repeat("A", MaxNameLen+1)), "name longer than"},
		{"label value too long", withLabel("description", strings.Repeat("x", MaxValueLen+1)), "longer than"},
		{"empty label name", withLabel("", "x"), "empty label name"},
		{"too many labels", manyLabels, "more than 256 labels"},
		{"target name too long", withLabel("pod", strings.Repeat("p", MaxNameLen+1)), "target Pod name"},
		// No Kubernetes namespace is longer than 63 characters, and
		// spec.target.namespace holds no more: a request for it could
		// never be written.
		{"namespace of 64 characters", withLabel("namespace", strings.Repeat("n", 64)), "a Kubernetes namespace has at most 63 characters"},
		{"exported namespace of 64 characters", withLabel("exported_namespace", strings.Repeat("n", 64)), "is 64 bytes long"},
		{"namespace of a node alert", func() testAlert {
			a := withLabel("namespace", strings.Repeat("n", 64))
			delete(a.Labels, "pod")
			a.Labels["node"] = "n1"
			return a
		}(), "at most 63 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeAlertmanager(amBody(t, good, tt.alert, good))
			require.NoError(t, err)
			assert.Len(t, b.Signals, 2, "the siblings are kept")
			require.Len(t, b.Rejected, 1)
			assert.Equal(t, 1, b.Rejected[0].Index)
			assert.Contains(t, b.Rejected[0].Reason, tt.reason)
		})
	}
}

func TestDecoder_alertmanagerStatusFromBatch(t *testing.T) {
	a := crashLooping()
	a.Status = ""
	b, err := newTestDecoder(t).DecodeAlertmanager(amBody(t, a))
	require.NoError(t, err)
	require.Len(t, b.Signals, 1)
	assert.Equal(t, StatusFiring, b.Signals[0].Status, "an alert without status takes the batch's")
}

func TestDecoder_alertmanagerSeverity(t *testing.T) {
	tests := []struct {
		label string
		want  Severity
	}{
		{"critical", SeverityCritical},
		{"page", SeverityCritical},
		{"warning", SeverityWarning},
		{"info", SeverityInfo},
		{"none", SeverityInfo},
		{"major", SeverityWarning},
		{"P1", SeverityWarning},
		{"", SeverityWarning},
	}
	for _, tt := range tests {
		t.Run(tt.label, func(t *testing.T) {
			a := crashLooping()
			if tt.label == "" {
				delete(a.Labels, "severity")
			} else {
				a.Labels["severity"] = tt.label
			}
			b, err := newTestDecoder(t).DecodeAlertmanager(amBody(t, a))
			require.NoError(t, err)
			require.Len(t, b.Signals, 1)
			assert.Equal(t, tt.want, b.Signals[0].Severity)
			v, ok := b.Signals[0].Labels["severity"]
			assert.Equal(t, tt.label != "", ok)
			assert.Equal(t, tt.label, v, "the source value is kept in the labels")
		})
	}
}

func TestParseSeverity(t *testing.T) {
	tests := []struct {
		in    string
		want  Severity
		known bool
	}{
		{"critical", SeverityCritical, true},
		{"CRITICAL", SeverityCritical, true},
		{"error", SeverityCritical, true},
		{"warn", SeverityWarning, true},
		{"informational", SeverityInfo, true},
		{"major", SeverityWarning, false},
		{"", SeverityWarning, false},
	}
	for _, tt := range tests {
		got, known := ParseSeverity(tt.in)
		assert.Equal(t, tt.want, got, tt.in)
		assert.Equal(t, tt.known, known, tt.in)
	}
}

func TestDecoder_alertmanagerID(t *testing.T) {
	body := readTestdata(t, "alertmanager_firing.json")
	first, err := newTestDecoder(t).DecodeAlertmanager(body)
	require.NoError(t, err)
	later := NewDecoder(MustFingerprinter(DefaultFingerprintFields), func() time.Time { return testNow.Add(time.Minute) })
	again, err := later.DecodeAlertmanager(body)
	require.NoError(t, err)
	require.Len(t, again.Signals, len(first.Signals))
	for i := range first.Signals {
		assert.Equal(t, first.Signals[i].ID, again.Signals[i].ID, "a retried delivery has the same ID (alert %d)", i)
	}

	base := crashLooping()
	idOf := func(t *testing.T, a testAlert) string {
		t.Helper()
		b, err := newTestDecoder(t).DecodeAlertmanager(amBody(t, a))
		require.NoError(t, err)
		require.Len(t, b.Signals, 1)
		return b.Signals[0].ID
	}
	baseID := idOf(t, base)
	tests := []struct {
		name   string
		mutate func(*testAlert)
		same   bool
	}{
		{"annotation changed", func(a *testAlert) { a.Annotations = map[string]string{"summary": "other"} }, true},
		{"endsAt written as null", func(a *testAlert) { a.EndsAt = "" }, true},
		{"startsAt in another zone", func(a *testAlert) { a.StartsAt = "2025-03-14T10:21:37.512+01:00" }, true},
		{"status", func(a *testAlert) { a.Status = "resolved"; a.EndsAt = "2025-03-14T09:41:37.512Z" }, false},
		{"status only", func(a *testAlert) { a.Status = "resolved" }, false},
		{"startsAt", func(a *testAlert) { a.StartsAt = "2025-03-14T09:21:37.513Z" }, false},
		{"endsAt", func(a *testAlert) { a.EndsAt = "2025-03-14T09:41:37.512Z" }, false},
		{"alertmanager fingerprint", func(a *testAlert) { a.Fingerprint = "0000000000000001" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := crashLooping()
			tt.mutate(&a)
			if tt.same {
				assert.Equal(t, baseID, idOf(t, a))
			} else {
				assert.NotEqual(t, baseID, idOf(t, a))
			}
		})
	}

	t.Run("without alertmanager fingerprint the label set identifies the alert", func(t *testing.T) {
		a := crashLooping()
		a.Fingerprint = ""
		id := idOf(t, a)
		assert.NotEqual(t, baseID, id)
		assert.Equal(t, id, idOf(t, a))
		a.Labels["container"] = "sidecar"
		assert.NotEqual(t, id, idOf(t, a))
	})
}

func TestDecoder_alertmanagerFingerprint(t *testing.T) {
	// The same alert with its labels written in two orders, decoded by two
	// decoders (as two receiver replicas would).
	const alertA = `{"status":"firing","labels":{"alertname":"KubePodCrashLooping","cluster":"prod-eu-1","namespace":"payments","pod":"payments-api-7d9c8b6f5-x2k4q","job":"kube-state-metrics","severity":"warning"},"startsAt":"2025-03-14T09:21:37.512Z"}`
	const alertB = `{"labels":{"severity":"warning","pod":"payments-api-7d9c8b6f5-x2k4q","job":"kube-state-metrics","namespace":"payments","cluster":"prod-eu-1","alertname":"KubePodCrashLooping"},"startsAt":"2025-03-14T09:21:37.512Z","status":"firing"}`
	d1 := NewDecoder(MustFingerprinter(DefaultFingerprintFields), nil)
	d2 := NewDecoder(MustFingerprinter([]string{"cluster", "name", "namespace", "target.kind", "target.name"}), nil)
	b1, err := d1.DecodeAlertmanager(amBody(t, alertA))
	require.NoError(t, err)
	b2, err := d2.DecodeAlertmanager(amBody(t, alertB))
	require.NoError(t, err)
	require.Len(t, b1.Signals, 1)
	require.Len(t, b2.Signals, 1)
	assert.Equal(t, b1.Signals[0].Fingerprint, b2.Signals[0].Fingerprint, "label order and decoder instance do not matter")
	assert.Equal(t, b1.Signals[0].ID, b2.Signals[0].ID)

	t.Run("differs by cluster", func(t *testing.T) {
		other := strings.Replace(alertA, `"cluster":"prod-eu-1"`, `"cluster":"prod-us-2"`, 1)
		noCluster := strings.Replace(alertA, `"cluster":"prod-eu-1",`, ``, 1)
		b, err := d1.DecodeAlertmanager(amBody(t, alertA, other, noCluster))
		require.NoError(t, err)
		require.Len(t, b.Signals, 3)
		assert.NotEqual(t, b.Signals[0].Fingerprint, b.Signals[1].Fingerprint)
		assert.NotEqual(t, b.Signals[0].Fingerprint, b.Signals[2].Fingerprint)
		assert.NotEqual(t, b.Signals[1].Fingerprint, b.Signals[2].Fingerprint)
	})

	t.Run("ignores labels outside the field list", func(t *testing.T) {
		other := strings.Replace(alertA, `"job":"kube-state-metrics"`, `"job":"ksm-2","container":"api"`, 1)
		b, err := d1.DecodeAlertmanager(amBody(t, alertA, other))
		require.NoError(t, err)
		require.Len(t, b.Signals, 2)
		assert.Equal(t, b.Signals[0].Fingerprint, b.Signals[1].Fingerprint)
	})

	t.Run("same for firing and resolved of one alert", func(t *testing.T) {
		fb, err := d1.DecodeAlertmanager(readTestdata(t, "alertmanager_firing.json"))
		require.NoError(t, err)
		rb, err := d2.DecodeAlertmanager(readTestdata(t, "alertmanager_resolved.json"))
		require.NoError(t, err)
		require.NotEmpty(t, fb.Signals)
		require.Len(t, rb.Signals, 1)
		f, r := fb.Signals[0], rb.Signals[0]
		require.Equal(t, f.AlertmanagerFP, r.AlertmanagerFP, "precondition: the same alert")
		assert.Equal(t, StatusFiring, f.Status)
		assert.Equal(t, StatusResolved, r.Status)
		assert.Equal(t, f.Fingerprint, r.Fingerprint)
		assert.NotEqual(t, f.ID, r.ID, "the resolution is a new delivery")
	})
}

func TestDecoder_alertmanagerInvalidPayload(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ``},
		{"not JSON", `<html><body>502 Bad Gateway</body></html>`},
		{"truncated", `{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"}}`},
		{"array", `[{"status":"firing"}]`},
		{"null", `null`},
		{"wrong version", `{"version":"3","status":"firing","alerts":[]}`},
		{"no alerts array", `{"version":"4","status":"firing","groupKey":"{}:{}"}`},
		{"alerts null", `{"version":"4","alerts":null}`},
		{"alerts an object", `{"version":"4","alerts":{"0":{}}}`},
		{"truncatedAlerts a string", `{"version":"4","truncatedAlerts":"3","alerts":[]}`},
		{"trailing garbage", `{"version":"4","alerts":[]} {}`},
		// Accepted by sonic v1.15.5, which skips unknown fields unchecked.
		{"bad escape in an unknown field", `{"alerts":[],"":"000000\0","000000000000000":100}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeAlertmanager([]byte(tt.body))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrInvalidPayload), "%v wraps ErrInvalidPayload", err)
			assert.Nil(t, b)
		})
	}

	t.Run("empty alerts array is a valid empty batch", func(t *testing.T) {
		b, err := newTestDecoder(t).DecodeAlertmanager([]byte(`{"version":"4","status":"firing","alerts":[]}`))
		require.NoError(t, err)
		assert.Empty(t, b.Signals)
		assert.Empty(t, b.Rejected)
	})
}

// TestDecoder_alertmanagerLargeBatch decodes a 500-alert batch and checks
// each fingerprint against one computed from a signal built by hand.
func TestDecoder_alertmanagerLargeBatch(t *testing.T) {
	const n = 500
	type want struct{ cluster, name, namespace, kind, target string }
	wants := make([]want, n)
	alerts := make([]any, n)
	for i := range n {
		w := want{cluster: fmt.Sprintf("prod-%d", i%3), namespace: fmt.Sprintf("team-%02d", i%17)}
		labels := map[string]string{"cluster": w.cluster, "namespace": w.namespace, "job": "kube-state-metrics", "prometheus": "monitoring/k8s", "severity": "warning"}
		switch i % 5 {
		case 0:
			w.name, w.kind, w.target = "KubePodCrashLooping", "Pod", fmt.Sprintf("api-%d-7d9c8b6f5-x2k4q", i)
			labels["pod"], labels["container"] = w.target, "api"
		case 1:
			w.name, w.kind, w.target = "KubeDeploymentReplicasMismatch", "Deployment", fmt.Sprintf("web-%d", i)
			labels["deployment"] = w.target
		case 2:
			w.name, w.kind, w.target = "KubeNodeNotReady", "Node", fmt.Sprintf("ip-10-42-%d-%d.internal", i/256, i%256)
			labels["node"] = w.target
		case 3:
			w.name, w.kind, w.target = "KubeJobFailed", "Job", fmt.Sprintf("backup-%d", i)
			labels["job_name"] = w.target
		case 4:
			w.name = "KubeAPIErrorBudgetBurn"
		}
		labels["alertname"] = w.name
		wants[i] = w
		alerts[i] = testAlert{
			Status:      []string{"firing", "resolved"}[i%2],
			Labels:      labels,
			Annotations: map[string]string{"summary": "synthetic"},
			StartsAt:    testNow.Add(-time.Duration(i) * time.Second).Format(time.RFC3339Nano),
			Fingerprint: fmt.Sprintf("%016x", i),
		}
	}
	b, err := newTestDecoder(t).DecodeAlertmanager(amBody(t, alerts...))
	require.NoError(t, err)
	require.Empty(t, b.Rejected)
	require.Len(t, b.Signals, n)

	fp := MustFingerprinter(DefaultFingerprintFields)
	ids := make(map[string]bool, n)
	for i, s := range b.Signals {
		w := wants[i]
		ns := w.namespace
		if w.kind == "Node" {
			ns = ""
		}
		byHand := Signal{
			Name:      w.name,
			Namespace: w.namespace,
			Target:    Target{Kind: w.kind, Name: w.target, Namespace: ns},
			Labels:    map[string]string{"cluster": w.cluster},
		}
		if !assert.Equal(t, fp.Fingerprint(&byHand), s.Fingerprint, "alert %d", i) {
			break
		}
		assert.Equal(t, byHand.Target, s.Target, "alert %d", i)
		ids[s.ID] = true
	}
	assert.Len(t, ids, n, "every alert has its own ID")
}

// A malformed item is explained in the sender's words, with its place in
// the body, not in Go type names.
func TestDecodeAlertmanager_reasonsInTheSendersWords(t *testing.T) {
	d := NewDecoder(MustFingerprinter(DefaultFingerprintFields), nil)
	good := `{"status":"firing","labels":{"alertname":"A","namespace":"n"},"startsAt":"2026-11-26T09:21:37Z"}`
	cases := map[string]struct{ alert, want string }{
		"not an object":   {`"just text"`, "alerts[1]: expected an object, got a string"},
		"label a number":  {`{"labels":{"alertname":"A","replicas":3}}`, `alerts[1].labels: expected a string, got a number (not a string: label "replicas")`},
		"labels an array": {`{"labels":["a"]}`, "alerts[1].labels: expected an object, got an array"},
		"bad time":        {`{"labels":{"alertname":"A"},"startsAt":"yesterday"}`, `alerts[1]: time "yesterday" is neither RFC 3339 nor Go's time format`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := d.DecodeAlertmanager([]byte(`{"version":"4","status":"firing","alerts":[` + good + `,` + tc.alert + `]}`))
			require.NoError(t, err)
			require.Len(t, b.Rejected, 1)
			assert.Equal(t, 1, b.Rejected[0].Index)
			assert.True(t, strings.HasPrefix(b.Rejected[0].Reason, tc.want), "reason: %s", b.Rejected[0].Reason)
			assert.NotContains(t, b.Rejected[0].Reason, "signal.")
		})
	}
	_, err := d.DecodeAlertmanager([]byte(`{"version":"4","alerts":{"a":1}}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "alerts: expected an array, got an object")
}
