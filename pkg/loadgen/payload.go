// Package loadgen builds and posts realistic Alertmanager webhooks: the
// payloads of tests, benchmarks and the load generator.
package loadgen

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Webhook is an Alertmanager webhook payload, version 4.
type Webhook struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []Alert           `json:"alerts"`
}

// Alert is one alert of a Webhook.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// PodAlert returns a firing kube-state-metrics style alert for one pod,
// with the labels and annotations a real KubePodCrashLooping carries.
func PodAlert(name, namespace, pod string, startsAt time.Time) Alert {
	labels := map[string]string{
		"alertname":  name,
		"namespace":  namespace,
		"pod":        pod,
		"container":  "app",
		"job":        "kube-state-metrics",
		"prometheus": "monitoring/k8s",
		"severity":   "warning",
		"cluster":    "prod-eu-1",
	}
	return Alert{
		Status: "firing",
		Labels: labels,
		Annotations: map[string]string{
			"summary":     "Pod is crash looping.",
			"description": fmt.Sprintf("Pod %s/%s (app) is in waiting state (reason: \"CrashLoopBackOff\").", namespace, pod),
			"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
		},
		StartsAt:     startsAt.UTC(),
		GeneratorURL: "http://prometheus-k8s-0:9090/graph?g0.expr=kube_pod_container_status_waiting_reason%7Breason%3D%22CrashLoopBackOff%22%7D",
		Fingerprint:  fingerprintOf(labels),
	}
}

// NewWebhook wraps alerts in a webhook as Alertmanager sends it.
func NewWebhook(alerts ...Alert) Webhook {
	status := "resolved"
	for _, a := range alerts {
		if a.Status == "firing" {
			status = "firing"
		}
	}
	return Webhook{
		Version:           "4",
		GroupKey:          `{}/{severity=~"warning|critical"}:{alertname="KubePodCrashLooping"}`,
		Status:            status,
		Receiver:          "stormweir",
		GroupLabels:       map[string]string{"alertname": "KubePodCrashLooping"},
		CommonLabels:      map[string]string{"job": "kube-state-metrics"},
		CommonAnnotations: map[string]string{},
		ExternalURL:       "http://alertmanager-main-0:9093",
		Alerts:            alerts,
	}
}

// JSON encodes w.
func (w Webhook) JSON() []byte {
	b, err := json.Marshal(w)
	if err != nil {
		panic(err) // only plain maps and strings: cannot fail
	}
	return b
}

// fingerprintOf is a stand-in for Alertmanager's label-set fingerprint:
// stable for a label set, 16 hex characters.
func fingerprintOf(labels map[string]string) string {
	var h uint64 = 14695981039346656037
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	add := func(s string) {
		for i := range len(s) {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	for _, k := range keys {
		add(k)
		add(labels[k])
	}
	return fmt.Sprintf("%016x", h)
}
