package signal

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fields of Grafana's webhook payload, as its documentation lists them
// (https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/,
// "Body" and "Alert"). grafana_documented.json is the documentation's
// example as printed; the other fixtures use no field beyond these.
var (
	grafanaBodyFields = []string{
		"receiver", "status", "orgId", "alerts", "groupLabels", "commonLabels", "commonAnnotations",
		"externalURL", "version", "groupKey", "truncatedAlerts", "title", "state", "message",
	}
	grafanaAlertFields = []string{
		"status", "labels", "annotations", "startsAt", "endsAt", "values", "generatorURL",
		"fingerprint", "silenceURL", "dashboardURL", "panelURL", "imageURL",
	}
)

func TestGrafanaFixtures_haveTheDocumentedFields(t *testing.T) {
	for _, file := range []string{"grafana_documented.json", "grafana_kubernetes.json", "grafana_test_notification.json"} {
		t.Run(file, func(t *testing.T) {
			var body map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(readTestdata(t, file), &body))
			assert.Subset(t, grafanaBodyFields, slices.Collect(maps.Keys(body)))
			var alerts []map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(body["alerts"], &alerts))
			require.NotEmpty(t, alerts)
			for _, a := range alerts {
				assert.Subset(t, grafanaAlertFields, slices.Collect(maps.Keys(a)))
			}
			assert.JSONEq(t, `"1"`, string(body["version"]))
		})
	}
}

func TestDecoder_grafanaDocumentedPayload(t *testing.T) {
	b, err := newTestDecoder(t).DecodeGrafana(readTestdata(t, "grafana_documented.json"))
	require.NoError(t, err)
	require.Empty(t, b.Rejected)
	require.Len(t, b.Signals, 2)
	assert.Empty(t, b.Ignored)

	s := b.Signals[0]
	assert.Equal(t, SourceGrafana, s.Source)
	assert.Equal(t, "High memory usage", s.Name)
	assert.Equal(t, StatusFiring, s.Status)
	assert.Equal(t, SeverityWarning, s.Severity, "no severity label")
	assert.Equal(t, Target{}, s.Target)
	assert.Equal(t, mustTime(t, "2021-10-12T07:51:03.157076Z"), s.StartsAt)
	assert.True(t, s.EndsAt.IsZero())
	assert.Equal(t, "https://play.grafana.org/alerting/1afz29v7z/edit", s.GeneratorURL)
	assert.Equal(t, "c6eadffa33fcdf37", s.AlertmanagerFP)
	assert.Equal(t, "{}:{}", s.GroupKey)
	assert.Equal(t, "https://play.grafana.org/", s.AlertmanagerExternal)
	assert.Equal(t, map[string]string{"alertname": "High memory usage", "team": "blue", "zone": "us-1"}, s.Labels)
	assert.Equal(t, map[string]string{
		"description": "The system has high memory usage",
		"runbook_url": "https://myrunbook.com/runbook/1234",
		"summary":     "This alert was triggered for zone us-1",
		"silenceURL":  "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
		"values":      "B=44.23943737541908 C=1",
		"orgId":       "1",
	}, s.Annotations, "empty dashboard and panel links are left out")
	assert.Equal(t, "High CPU usage", b.Signals[1].Name)
	assert.NotEqual(t, s.ID, b.Signals[1].ID)
	assert.NotEqual(t, s.Fingerprint, b.Signals[1].Fingerprint)
}

func TestDecoder_grafanaKubernetesAlerts(t *testing.T) {
	b, err := newTestDecoder(t).DecodeGrafana(readTestdata(t, "grafana_kubernetes.json"))
	require.NoError(t, err)
	require.Empty(t, b.Rejected)
	require.Len(t, b.Signals, 3)
	fp := MustFingerprinter(DefaultFingerprintFields)

	pod := b.Signals[0]
	assert.Equal(t, "PodRestartingOften", pod.Name)
	assert.Equal(t, SeverityCritical, pod.Severity)
	assert.Equal(t, Target{"Pod", "payments-api-7d9c8b6f5-x2k4q", "payments"}, pod.Target)
	assert.Equal(t, "payments", pod.Namespace)
	assert.Equal(t, "https://grafana.example.com/d/k8s-pods?orgId=3", pod.Annotations["dashboardURL"])
	assert.Equal(t, "https://grafana.example.com/d/k8s-pods?orgId=3&viewPanel=4", pod.Annotations["panelURL"])
	assert.Equal(t, "https://grafana.example.com/public/img/attachments/x2k4q.png", pod.Annotations["imageURL"])
	assert.Equal(t, "A=6 B=1", pod.Annotations["values"])
	assert.Equal(t, "3", pod.Annotations["orgId"])
	byHand := Signal{Name: "PodRestartingOften", Namespace: "payments", Target: pod.Target, Labels: map[string]string{"cluster": "prod-eu-1"}}
	assert.Equal(t, fp.Fingerprint(&byHand), pod.Fingerprint, "the fingerprint of the same alert from Alertmanager")

	deploy := b.Signals[1]
	assert.Equal(t, StatusResolved, deploy.Status)
	assert.Equal(t, Target{"Deployment", "checkout-web", "checkout"}, deploy.Target)
	assert.Equal(t, mustTime(t, "2026-11-29T21:39:00Z"), deploy.EndsAt)
	assert.Equal(t, "set by the rule", deploy.Annotations["values"], "the alert's own annotation wins")

	noData := b.Signals[2]
	assert.Equal(t, "DatasourceNoData", noData.Name)
	_, hasValues := noData.Annotations["values"]
	assert.False(t, hasValues, "no values, no annotation")
}

func TestDecoder_grafanaSameAlertAsAlertmanagerIsAnotherMessage(t *testing.T) {
	body := readTestdata(t, "grafana_kubernetes.json")
	d := newTestDecoder(t)
	g, err := d.DecodeGrafana(body)
	require.NoError(t, err)
	// The same alerts posted to the Alertmanager endpoint (version aside).
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m))
	m["version"] = "4"
	amBody, err := json.Marshal(m)
	require.NoError(t, err)
	a, err := d.DecodeAlertmanager(amBody)
	require.NoError(t, err)
	require.Len(t, a.Signals, len(g.Signals))
	for i := range g.Signals {
		assert.Equal(t, a.Signals[i].Fingerprint, g.Signals[i].Fingerprint, "one incident whichever way it came")
		assert.NotEqual(t, a.Signals[i].ID, g.Signals[i].ID, "message ids are per source")
	}
}

func TestDecoder_grafanaContactPointTestIsIgnored(t *testing.T) {
	b, err := newTestDecoder(t).DecodeGrafana(readTestdata(t, "grafana_test_notification.json"))
	require.NoError(t, err)
	assert.Empty(t, b.Signals)
	assert.Empty(t, b.Rejected)
	assert.Len(t, b.Ignored, 1)

	// A test with labels of the user's own is a signal like any other.
	custom := grafanaBody(t, `{"status":"firing","labels":{"alertname":"TestAlert","instance":"Grafana","pod":"api-0","namespace":"payments"}}`)
	b, err = newTestDecoder(t).DecodeGrafana(custom)
	require.NoError(t, err)
	assert.Len(t, b.Signals, 1)
}

// grafanaBody wraps raw alert JSON values in a version 1 Grafana webhook.
func grafanaBody(tb testing.TB, alerts ...string) []byte {
	tb.Helper()
	raws := make([]json.RawMessage, 0, len(alerts))
	for _, a := range alerts {
		raws = append(raws, json.RawMessage(a))
	}
	b, err := json.Marshal(map[string]any{
		"receiver": "stormweir", "status": "firing", "orgId": 1, "alerts": raws,
		"groupLabels": map[string]string{}, "commonLabels": map[string]string{}, "commonAnnotations": map[string]string{},
		"externalURL": "https://grafana.example.com/", "version": "1", "groupKey": "{}:{}", "truncatedAlerts": 0,
		"title": "[FIRING]", "state": "alerting", "message": "",
	})
	require.NoError(tb, err)
	return b
}

func TestDecoder_grafanaRejectsOneAlert(t *testing.T) {
	good := `{"status":"firing","labels":{"alertname":"PodRestartingOften","pod":"api-0","namespace":"payments"},"startsAt":"2026-11-29T21:40:10Z","values":{"A":6}}`
	tests := []struct {
		name   string
		alert  string
		reason string
	}{
		{"no alertname", `{"status":"firing","labels":{"pod":"api-0"}}`, "missing name"},
		{"status unknown", `{"status":"pending","labels":{"alertname":"X"}}`, `status "pending"`},
		{"label value not a string", `{"status":"firing","labels":{"alertname":"X","replicas":3}}`, "replicas"},
		{"values not numbers", `{"status":"firing","labels":{"alertname":"X"},"values":{"A":"six"}}`, "values"},
		{"startsAt not a time", `{"status":"firing","labels":{"alertname":"X"},"startsAt":"yesterday"}`, "yesterday"},
		{"not an object", `42`, "number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeGrafana(grafanaBody(t, good, tt.alert, good))
			require.NoError(t, err)
			assert.Len(t, b.Signals, 2, "the siblings are kept")
			require.Len(t, b.Rejected, 1)
			assert.Equal(t, 1, b.Rejected[0].Index)
			assert.Contains(t, b.Rejected[0].Reason, tt.reason)
		})
	}
}

func TestDecoder_grafanaInvalidPayload(t *testing.T) {
	tests := []struct {
		name, body, reason string
	}{
		{"not JSON", `alertname=X`, "grafana webhook"},
		{"Alertmanager's version", `{"version":"4","alerts":[]}`, `version "4"`},
		{"no alerts", `{"version":"1"}`, "no alerts"},
		{"alerts not an array", `{"version":"1","alerts":{}}`, "alerts"},
		{"orgId not a number", `{"version":"1","orgId":"one","alerts":[]}`, "orgId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newTestDecoder(t).DecodeGrafana([]byte(tt.body))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrInvalidPayload))
			assert.Contains(t, err.Error(), tt.reason)
			assert.Nil(t, b)
		})
	}
}
