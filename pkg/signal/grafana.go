package signal

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Grafana Alerting's webhook contact point posts Alertmanager's webhook
// payload (Grafana-managed alerts go through an embedded Alertmanager)
// with extensions: orgId and the deprecated title, state and message at
// the top, silenceURL, dashboardURL, panelURL, imageURL and values on each
// alert. Its version is "1", not Alertmanager's "4". The alerts are mapped
// as Alertmanager's are, with the same per-alert rules; Grafana's links
// and values become annotations, which the RemediationRequest carries.
// Documented at https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/
// and written by grafana/alerting's receivers/webhook.

// grafanaHeader is the batch-level part of the payload. title, state and
// message repeat what the alerts say (state is "alerting" or "ok" for
// the batch's status) and are not read.
type grafanaHeader struct {
	amHeader
	OrgID int64 `json:"orgId"`
}

// grafanaAlert is one alert of the payload.
type grafanaAlert struct {
	amAlert
	SilenceURL   string             `json:"silenceURL"`
	DashboardURL string             `json:"dashboardURL"`
	PanelURL     string             `json:"panelURL"`
	ImageURL     string             `json:"imageURL"`
	Values       map[string]float64 `json:"values"`
}

// grafanaWebhook is the whole payload decoded in one pass: the common case.
type grafanaWebhook struct {
	grafanaHeader
	Alerts []grafanaAlert `json:"alerts"`
}

// grafanaWebhookRaw keeps the alerts undecoded, to decode and reject them
// one by one when the one-pass decode fails.
type grafanaWebhookRaw struct {
	grafanaHeader
	Alerts rawItems `json:"alerts"`
}

// DecodeGrafana decodes a Grafana Alerting webhook (version 1). Every
// alert becomes its own signal of source grafana; an invalid alert is
// rejected with its reason and never drops its siblings. The alert
// Grafana's "Test" button sends (labels alertname=TestAlert and
// instance=Grafana, nothing else) is counted as ignored: a contact point
// test must not start a remediation. The error is non-nil (and wraps
// ErrInvalidPayload) only when the body as a whole is unusable.
func (d *Decoder) DecodeGrafana(body []byte) (*Batch, error) {
	var w grafanaWebhook
	if err := unmarshal(body, &w); err == nil {
		if err := checkGrafanaHeader(&w.grafanaHeader, w.Alerts == nil); err != nil {
			return nil, err
		}
		received := d.now().UTC()
		b := newAlertBatch(&w.amHeader, len(w.Alerts))
		for i := range w.Alerts {
			d.addGrafanaAlert(b, &w.grafanaHeader, i, &w.Alerts[i], received)
		}
		return b, nil
	}
	var w2 grafanaWebhookRaw
	if err := unmarshal(body, &w2); err != nil {
		return nil, fmt.Errorf("%w: grafana webhook: %s", ErrInvalidPayload, decodeReason("", body, &grafanaWebhookRaw{}, err))
	}
	if err := checkGrafanaHeader(&w2.grafanaHeader, w2.Alerts == nil); err != nil {
		return nil, err
	}
	received := d.now().UTC()
	b := newAlertBatch(&w2.amHeader, len(w2.Alerts))
	for i, raw := range w2.Alerts {
		var a grafanaAlert
		if err := unmarshal(raw, &a); err != nil {
			b.Rejected = append(b.Rejected, badAlert(i, raw, &grafanaAlert{}, err))
			continue
		}
		d.addGrafanaAlert(b, &w2.grafanaHeader, i, &a, received)
	}
	return b, nil
}

func checkGrafanaHeader(h *grafanaHeader, noAlerts bool) error {
	if h.Version != "" && h.Version != "1" {
		return fmt.Errorf("%w: grafana webhook version %q is not supported (want 1)", ErrInvalidPayload, h.Version)
	}
	if noAlerts {
		return fmt.Errorf("%w: grafana webhook has no alerts array", ErrInvalidPayload)
	}
	return nil
}

// isGrafanaTestAlert reports the alert of a contact point test with
// Grafana's default labels.
func isGrafanaTestAlert(a *grafanaAlert) bool {
	return len(a.Labels) == 2 && a.Labels["alertname"] == "TestAlert" && a.Labels["instance"] == "Grafana"
}

// addGrafanaAlert appends alert i of the batch as a signal, a rejection or
// an ignored contact point test.
func (d *Decoder) addGrafanaAlert(b *Batch, h *grafanaHeader, i int, a *grafanaAlert, received time.Time) {
	if isGrafanaTestAlert(a) {
		b.Ignored = append(b.Ignored, Rejection{Index: i, Name: "TestAlert", Reason: "a Grafana contact point test, not an alert"})
		return
	}
	s, reason := alertSignal(SourceGrafana, &h.amHeader, &a.amAlert)
	if reason == "" {
		s.Annotations = grafanaAnnotations(a, h.OrgID)
		reason = d.finish(&s, received)
	}
	if reason != "" {
		b.Rejected = append(b.Rejected, Rejection{Index: i, Name: a.Labels["alertname"], Reason: reason})
		return
	}
	b.Signals = append(b.Signals, s)
	b.Indexes = append(b.Indexes, i)
}

// grafanaAnnotations adds Grafana's links, the values that triggered the
// alert and the organization to the alert's annotations, under Grafana's
// field names, unless the alert has an annotation of that name already.
func grafanaAnnotations(a *grafanaAlert, orgID int64) map[string]string {
	extra := [...]struct{ k, v string }{
		{"silenceURL", a.SilenceURL},
		{"dashboardURL", a.DashboardURL},
		{"panelURL", a.PanelURL},
		{"imageURL", a.ImageURL},
		{"values", formatValues(a.Values)},
		{"orgId", ""},
	}
	if orgID != 0 {
		extra[len(extra)-1].v = strconv.FormatInt(orgID, 10)
	}
	m := a.Annotations
	for _, e := range extra {
		if e.v == "" {
			continue
		}
		if m == nil {
			m = make(map[string]string, len(extra))
		}
		if _, ok := m[e.k]; !ok {
			m[e.k] = e.v
		}
	}
	return m
}

// formatValues renders Grafana's values ({"B": 44.2, "C": 1}) as
// "B=44.2 C=1", by name.
func formatValues(values map[string]float64) string {
	if len(values) == 0 {
		return ""
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(strconv.FormatFloat(values[k], 'g', -1, 64))
	}
	return sb.String()
}
