package signal

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTargetFromLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   Target
	}{
		{"pod", map[string]string{"namespace": "payments", "pod": "api-0", "container": "api"}, Target{"Pod", "api-0", "payments"}},
		{"pod wins over deployment", map[string]string{"namespace": "ns", "deployment": "web", "pod": "web-1"}, Target{"Pod", "web-1", "ns"}},
		{"deployment wins over node", map[string]string{"namespace": "ns", "deployment": "web", "node": "n1"}, Target{"Deployment", "web", "ns"}},
		{"statefulset", map[string]string{"namespace": "ns", "statefulset": "db"}, Target{"StatefulSet", "db", "ns"}},
		{"daemonset", map[string]string{"namespace": "logging", "daemonset": "fluent-bit"}, Target{"DaemonSet", "fluent-bit", "logging"}},
		{"replicaset", map[string]string{"namespace": "ns", "replicaset": "web-6b8f7c5d4"}, Target{"ReplicaSet", "web-6b8f7c5d4", "ns"}},
		{"job_name is a Job", map[string]string{"namespace": "ns", "job": "kube-state-metrics", "job_name": "backup-1"}, Target{"Job", "backup-1", "ns"}},
		{"job is the scrape job, not a target", map[string]string{"namespace": "monitoring", "job": "kube-state-metrics"}, Target{Namespace: "monitoring"}},
		{"cronjob", map[string]string{"namespace": "ns", "cronjob": "backup"}, Target{"CronJob", "backup", "ns"}},
		{"node is cluster-scoped", map[string]string{"namespace": "monitoring", "node": "ip-10-0-0-1"}, Target{Kind: "Node", Name: "ip-10-0-0-1"}},
		{"service", map[string]string{"namespace": "ns", "service": "web"}, Target{"Service", "web", "ns"}},
		{"persistentvolumeclaim", map[string]string{"namespace": "ns", "persistentvolumeclaim": "data-db-0"}, Target{"PersistentVolumeClaim", "data-db-0", "ns"}},
		{"exported_pod alone", map[string]string{"exported_namespace": "search", "exported_pod": "idx-0"}, Target{"Pod", "idx-0", "search"}},
		{"exported_pod wins over pod", map[string]string{"namespace": "monitoring", "pod": "kube-state-metrics-6f7d8c9b5-lw4tn", "exported_namespace": "search", "exported_pod": "idx-0"}, Target{"Pod", "idx-0", "search"}},
		{"exported_deployment", map[string]string{"namespace": "ns", "exported_deployment": "web"}, Target{"Deployment", "web", "ns"}},
		{"exported_node", map[string]string{"exported_node": "n1", "node": "scraper-node"}, Target{Kind: "Node", Name: "n1"}},
		{"empty value is absent", map[string]string{"namespace": "ns", "pod": "", "deployment": "web"}, Target{"Deployment", "web", "ns"}},
		{"nothing", map[string]string{"alertname": "Watchdog"}, Target{}},
		{"nil labels", nil, Target{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TargetFromLabels(tt.labels)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.want.Kind == "", got.IsZero())
		})
	}
}
