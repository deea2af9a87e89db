package signal

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// amHeader is the batch-level part of Alertmanager's webhook payload,
// version 4.
type amHeader struct {
	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts int    `json:"truncatedAlerts"`
	Status          string `json:"status"`
	Receiver        string `json:"receiver"`
	ExternalURL     string `json:"externalURL"`
}

// amWebhook is the whole payload decoded in one pass: the common case.
type amWebhook struct {
	amHeader
	Alerts []amAlert `json:"alerts"`
}

// amWebhookRaw keeps the alerts undecoded, so that when the one-pass
// decode fails each alert can be decoded, and rejected, on its own.
type amWebhookRaw struct {
	amHeader
	Alerts rawItems `json:"alerts"`
}

// amAlert is one alert of the webhook payload.
type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     flexTime          `json:"startsAt"`
	EndsAt       flexTime          `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// DecodeAlertmanager decodes an Alertmanager webhook (version 4). Every
// alert of the batch becomes its own signal; an invalid alert is rejected
// with its reason and never drops its siblings. The error is non-nil (and
// wraps ErrInvalidPayload) only when the body as a whole is unusable.
func (d *Decoder) DecodeAlertmanager(body []byte) (*Batch, error) {
	// Decoding the whole body at once costs about half of decoding it as
	// raw items and then each item (JSON decoding dominates the receiver's
	// CPU, DESIGN §10). Only a body that fails as a whole, because one alert
	// is malformed or the body is, takes the per-item path to find out which.
	var w amWebhook
	if err := unmarshal(body, &w); err == nil {
		if err := checkHeader(&w.amHeader, w.Alerts == nil); err != nil {
			return nil, err
		}
		received := d.now().UTC()
		b := newAlertBatch(&w.amHeader, len(w.Alerts))
		for i := range w.Alerts {
			d.addAlert(b, &w.amHeader, i, &w.Alerts[i], received)
		}
		return b, nil
	}
	return d.decodeAlertmanagerItems(body)
}

func (d *Decoder) decodeAlertmanagerItems(body []byte) (*Batch, error) {
	var w amWebhookRaw
	if err := unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: alertmanager webhook: %s", ErrInvalidPayload, decodeReason("", body, &amWebhookRaw{}, err))
	}
	if err := checkHeader(&w.amHeader, w.Alerts == nil); err != nil {
		return nil, err
	}
	received := d.now().UTC()
	b := newAlertBatch(&w.amHeader, len(w.Alerts))
	for i, raw := range w.Alerts {
		var a amAlert
		if err := unmarshal(raw, &a); err != nil {
			b.Rejected = append(b.Rejected, badAlert(i, raw, &amAlert{}, err))
			continue
		}
		d.addAlert(b, &w.amHeader, i, &a, received)
	}
	return b, nil
}

// badAlert explains an alert that failed to decode into v, a pointer to a
// zero alert of the source's type: the JSON library's reason with the
// alert's place in the body, which labels or annotations are not strings
// (JSON libraries name the map, not the key), and the alertname when it
// can still be read.
func badAlert(i int, raw []byte, v any, err error) Rejection {
	r := Rejection{Index: i, Reason: decodeReason(fmt.Sprintf("alerts[%d]", i), raw, v, err)}
	var loose struct {
		Labels      map[string]any `json:"labels"`
		Annotations map[string]any `json:"annotations"`
	}
	if unmarshal(raw, &loose) != nil {
		return r
	}
	if name, ok := loose.Labels["alertname"].(string); ok {
		r.Name = name
	}
	var bad []string
	for _, m := range []struct {
		what string
		m    map[string]any
	}{{"label", loose.Labels}, {"annotation", loose.Annotations}} {
		keys := make([]string, 0, len(m.m))
		for k, v := range m.m {
			if _, ok := v.(string); !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			bad = append(bad, fmt.Sprintf("%s %q", m.what, clip([]byte(k))))
		}
	}
	if len(bad) > 5 {
		bad = append(bad[:5], "...")
	}
	if len(bad) > 0 {
		r.Reason += " (not a string: " + strings.Join(bad, ", ") + ")"
	}
	return r
}

func checkHeader(h *amHeader, noAlerts bool) error {
	if h.Version != "" && h.Version != "4" {
		return fmt.Errorf("%w: alertmanager webhook version %q is not supported (want 4)", ErrInvalidPayload, h.Version)
	}
	if noAlerts {
		return fmt.Errorf("%w: alertmanager webhook has no alerts array", ErrInvalidPayload)
	}
	return nil
}

func newAlertBatch(h *amHeader, n int) *Batch {
	return &Batch{Signals: make([]Signal, 0, n), Indexes: make([]int, 0, n), Truncated: max(h.TruncatedAlerts, 0)}
}

// addAlert appends alert i of the batch as a signal or as a rejection.
func (d *Decoder) addAlert(b *Batch, h *amHeader, i int, a *amAlert, received time.Time) {
	s, reason := alertSignal(SourceAlertmanager, h, a)
	if reason == "" {
		reason = d.finish(&s, received)
	}
	if reason != "" {
		b.Rejected = append(b.Rejected, Rejection{Index: i, Name: a.Labels["alertname"], Reason: reason})
		return
	}
	b.Signals = append(b.Signals, s)
	b.Indexes = append(b.Indexes, i)
}

// alertSignal maps an alert of an Alertmanager-shaped webhook from src.
func alertSignal(src Source, h *amHeader, a *amAlert) (Signal, string) {
	status := a.Status
	if status == "" {
		status = h.Status
	}
	var st Status
	switch status {
	case "firing":
		st = StatusFiring
	case "resolved":
		st = StatusResolved
	default:
		return Signal{}, fmt.Sprintf("status %q is neither firing nor resolved", status)
	}
	sev, _ := ParseSeverity(a.Labels["severity"])
	t := TargetFromLabels(a.Labels)
	s := Signal{
		Source:               src,
		Name:                 a.Labels["alertname"],
		Status:               st,
		Severity:             sev,
		Namespace:            t.Namespace,
		Target:               t,
		Labels:               a.Labels,
		Annotations:          a.Annotations,
		StartsAt:             a.StartsAt.UTC(),
		EndsAt:               a.EndsAt.UTC(),
		GeneratorURL:         a.GeneratorURL,
		GroupKey:             h.GroupKey,
		AlertmanagerFP:       a.Fingerprint,
		TruncatedAlerts:      max(h.TruncatedAlerts, 0),
		AlertmanagerExternal: h.ExternalURL,
	}
	if clusterScoped[t.Kind] {
		// A cluster-scoped target still belongs to the alert's namespace
		// label when it has one (routing, environment).
		s.Namespace = namespaceFromLabels(a.Labels)
	}
	identity := a.Fingerprint
	if identity == "" {
		identity = labelSetHash(a.Labels)
	}
	s.ID = idKey(string(src), identity, string(st), timeKey(s.StartsAt), timeKey(s.EndsAt))
	return s, ""
}
