package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/test/testenv"
)

// eventPipelineConfig is `stormweir run` writing to api, with its state in
// the local Redis (the Lua scripts decide the counts).
func eventPipelineConfig(t *testing.T, api *apiServer, fallback string) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Log.Level = "warn"
	cfg.AllInOne.DataDir = t.TempDir()
	cfg.AllInOne.Store = "redis"
	cfg.AllInOne.Sink = "kubernetes"
	cfg.Writer.Kubeconfig = api.Kubeconfig
	cfg.Writer.FallbackNamespace = fallback
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	cfg.Receiver.ShutdownTimeout = 2 * time.Second
	cfg.Worker.DrainTimeout = 2 * time.Second
	rd := testenv.LocalRedis(t)
	cfg.Redis.Addrs = []string{rd.Addr}
	cfg.Redis.KeyPrefix = rd.Prefix
	return cfg
}

// postEvent posts e to the receiver's Kubernetes event endpoint, as an
// event exporter would, and requires a 202.
func postEvent(t *testing.T, pl *pipeline, e *corev1.Event) {
	t.Helper()
	body, err := json.Marshal(e)
	require.NoError(t, err)
	url := pl.WebhookURL[:len(pl.WebhookURL)-len(receiver.PathAlertmanager)] + receiver.PathKubernetesEvent
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
}

// warning is a Warning event about pod in ns, seen count times.
func warning(ns, name, reason, pod string, count int32, first, last time.Time) *corev1.Event {
	return &corev1.Event{
		TypeMeta:       metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + ns + "-" + name)},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod, APIVersion: "v1"},
		Reason:         reason,
		Message:        "Back-off restarting failed container app in pod " + pod,
		Type:           corev1.EventTypeWarning,
		Count:          count,
		FirstTimestamp: metav1.NewTime(first),
		LastTimestamp:  metav1.NewTime(last),
		Source:         corev1.EventSource{Component: "kubelet", Host: "node-1"},
	}
}

// occurrences is the request count of the one request in ns, or -1 while
// there is none; a second request fails the test.
func occurrences(c *assert.CollectT, api *apiServer, ns string) int64 {
	got, dups, err := api.requests(context.Background(), ns)
	require.NoError(c, err)
	require.Empty(c, dups)
	require.LessOrEqual(c, len(got), 1, "one request for one event")
	for _, rr := range got {
		_, n, _ := state(rr)
		return n
	}
	return -1
}

// TestPipeline_eventCountIsOccurrences: a Kubernetes event's count is its
// number of occurrences, and a re-post with a higher count raises the
// request's occurrences to that count, not by one.
//
//	t=0    an event seen 7 times is posted: one request, occurrences 7.
//	then   the same event, now seen 9 times: the request shows 9.
//	then   the count-9 event is posted again (an exporter's restart): still 9.
func TestPipeline_eventCountIsOccurrences(t *testing.T) {
	api := startAPIServer(t)
	id := testenv.RandomID()[:6]
	ns := api.namespace(t, "events-"+id, map[string]string{"environment": "production"})
	fallback := api.namespace(t, "fb-"+id, nil)
	pl := startPipeline(t, eventPipelineConfig(t, api, fallback))

	first := time.Now().Add(-10 * time.Minute).UTC().Truncate(time.Second)
	postEvent(t, pl, warning(ns, "api-0.17f1", "BackOff", "api-0", 7, first, first.Add(5*time.Minute)))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.EqualValues(c, 7, occurrences(c, api, ns))
	}, 20*time.Second, 50*time.Millisecond, "an event seen 7 times is 7 occurrences")

	nine := warning(ns, "api-0.17f1", "BackOff", "api-0", 9, first, first.Add(7*time.Minute))
	postEvent(t, pl, nine)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.EqualValues(c, 9, occurrences(c, api, ns))
	}, 20*time.Second, 50*time.Millisecond, "the event's count rose to 9")

	// The same event again, as a restarted exporter re-posts it (another
	// delivery, no new occurrence); once it is decided, another event of
	// the same pod, seen twice, adds its own 2.
	nine.LastTimestamp = metav1.NewTime(first.Add(7*time.Minute + time.Second))
	postEvent(t, pl, nine)
	require.Eventually(t, func() bool {
		return testenv.MetricValue(t, pl.MetricsURL, "stormweir_dedup_decisions_total", map[string]string{"decision": "occurrence"}) == 2
	}, 20*time.Second, 20*time.Millisecond, "the re-post is decided")
	postEvent(t, pl, warning(ns, "api-0.17f2", "BackOff", "api-0", 2, first, first.Add(8*time.Minute)))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.EqualValues(c, 11, occurrences(c, api, ns))
	}, 20*time.Second, 50*time.Millisecond, "9 + 2: the re-post counted nothing")
}
