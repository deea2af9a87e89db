// Package loadgen builds and posts realistic Alertmanager webhooks: the
// payloads of tests, benchmarks and the load generator.
package loadgen

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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

// alertTexts are the annotations and expression of each alertname a load
// sends, as the kube-prometheus rules word them, so an alert says what its
// name says.
var alertTexts = map[string]struct{ summary, description, runbook, expr string }{
	"KubePodCrashLooping": {
		summary:     "Pod is crash looping.",
		description: "Pod %s/%s (app) is in waiting state (reason: \"CrashLoopBackOff\").",
		runbook:     "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
		expr:        "kube_pod_container_status_waiting_reason%7Breason%3D%22CrashLoopBackOff%22%7D",
	},
	"KubeContainerOOMKilled": {
		summary:     "Container was OOM killed.",
		description: "Container app in pod %s/%s was killed for exceeding its memory limit (reason: \"OOMKilled\").",
		expr:        "kube_pod_container_status_last_terminated_reason%7Breason%3D%22OOMKilled%22%7D",
	},
}

// PodAlert returns a firing kube-state-metrics style alert for one pod,
// with the labels and annotations a real one of that alertname carries
// (an alertname with a "-N" suffix, as MaxPerScope makes, reads as its
// base name).
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
	base, _, _ := strings.Cut(name, "-")
	txt, ok := alertTexts[base]
	if !ok {
		txt = alertTexts["KubePodCrashLooping"]
		txt.summary = base + " is firing."
		txt.description = base + " is firing for pod %s/%s."
		txt.runbook = ""
	}
	ann := map[string]string{
		"summary":     txt.summary,
		"description": fmt.Sprintf(txt.description, namespace, pod),
	}
	if txt.runbook != "" {
		ann["runbook_url"] = txt.runbook
	}
	return Alert{
		Status:       "firing",
		Labels:       labels,
		Annotations:  ann,
		StartsAt:     startsAt.UTC(),
		GeneratorURL: "http://prometheus-k8s-0:9090/graph?g0.expr=" + txt.expr,
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
	// Grouped by alertname, as a route with group_by: [alertname] sends
	// them; a batch mixing alertnames names none.
	group := map[string]string{}
	if len(alerts) > 0 {
		name := alerts[0].Labels["alertname"]
		if !slices.ContainsFunc(alerts, func(a Alert) bool { return a.Labels["alertname"] != name }) {
			group["alertname"] = name
		}
	}
	key := `{}/{severity=~"warning|critical"}:{}`
	if n, ok := group["alertname"]; ok {
		key = fmt.Sprintf(`{}/{severity=~"warning|critical"}:{alertname=%q}`, n)
	}
	return Webhook{
		Version:           "4",
		GroupKey:          key,
		Status:            status,
		Receiver:          "stormweir",
		GroupLabels:       group,
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
