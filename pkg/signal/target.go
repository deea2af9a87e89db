package signal

// targetLabels lists the labels that name a target resource, in priority
// order: the first present wins. Each also matches its "exported_" variant,
// which Prometheus writes when a scraped label collides with a target label
// (kube-state-metrics series carry the pod in exported_pod, for example).
var targetLabels = []struct{ label, kind string }{
	{"pod", "Pod"},
	{"deployment", "Deployment"},
	{"statefulset", "StatefulSet"},
	{"daemonset", "DaemonSet"},
	{"replicaset", "ReplicaSet"},
	{"job_name", "Job"},
	{"cronjob", "CronJob"},
	{"node", "Node"},
	{"service", "Service"},
	{"persistentvolumeclaim", "PersistentVolumeClaim"},
}

// clusterScoped are the kinds that have no namespace.
var clusterScoped = map[string]bool{"Node": true, "PersistentVolume": true, "Namespace": true, "ClusterRole": true, "StorageClass": true}

// TargetFromLabels finds the resource an alert is about from well-known
// labels. The namespace comes from "namespace" (or "exported_namespace")
// unless the kind is cluster-scoped. No match gives a zero Target whose
// Namespace is still set, so the fingerprint stays defined.
//
// An "exported_" label wins over its plain variant: Prometheus only writes
// exported_pod when the series' own pod label collided with the scrape
// target's, so then exported_pod is the pod the alert is about and pod is
// the exporter's (kube-state-metrics scraped without honor_labels).
//
// The Prometheus "job" label names the scrape job and is on nearly every
// alert, so it never names a target; kube-state-metrics' "job_name" does.
func TargetFromLabels(labels map[string]string) Target {
	ns := namespaceFromLabels(labels)
	for _, tl := range targetLabels {
		if v := first(labels, "exported_"+tl.label, tl.label); v != "" {
			t := Target{Kind: tl.kind, Name: v, Namespace: ns}
			if clusterScoped[tl.kind] {
				t.Namespace = ""
			}
			return t
		}
	}
	return Target{Namespace: ns}
}

// namespaceFromLabels is the alert's namespace, preferring the series' own
// (exported_namespace) over the scrape target's.
func namespaceFromLabels(labels map[string]string) string {
	return first(labels, "exported_namespace", "namespace")
}

// first returns the first non-empty value among keys.
func first(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}
