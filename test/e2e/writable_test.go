package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/test/testenv"
)

// TestPipeline_unwritableAlertIsRejectedAlone posts, between two good
// alerts, one whose namespace label is 64 characters long: no Kubernetes
// namespace is, and spec.target.namespace holds at most 63, so its
// request could never be written. It used to be accepted (202), then
// refused by the API server (422) and dead-lettered by the writer.
//
// Timeline (`stormweir run`, in-memory state, a real API server):
//
//	t=0    one webhook, three alerts: 202, accepted 2, and alert 1
//	       rejected with its reason (the namespace and its bound).
//	≤10s   exactly the two siblings' requests exist; once they do, the
//	       writer has dead-lettered nothing and the receiver counted one
//	       rejected signal.
func TestPipeline_unwritableAlertIsRejectedAlone(t *testing.T) {
	ctx := context.Background()
	api := startAPIServer(t)
	id := testenv.RandomID()[:6]
	ns := api.namespace(t, "pay-"+id, nil)
	fallback := api.namespace(t, "fb-"+id, nil)

	cfg := eventPipelineConfig(t, api, fallback)
	cfg.Log.Level = "error"
	cfg.AllInOne.Store = "memory"
	pl := startPipeline(t, cfg)

	long := strings.Repeat("n", 64)
	now := time.Now()
	body := loadgen.NewWebhook(
		loadgen.PodAlert("KubePodCrashLooping", ns, "api-0", now),
		loadgen.PodAlert("KubePodCrashLooping", long, "api-1", now),
		loadgen.PodAlert("KubePodCrashLooping", ns, "api-2", now),
	).JSON()
	req, err := http.NewRequest(http.MethodPost, pl.WebhookURL, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "the siblings are stored")
	var got receiver.Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Equal(t, 2, got.Accepted)
	require.Len(t, got.Rejected, 1)
	assert.Equal(t, 1, got.Rejected[0].Index)
	assert.Equal(t, "KubePodCrashLooping", got.Rejected[0].Name)
	assert.Equal(t, fmt.Sprintf("namespace %q is 64 bytes long; a Kubernetes namespace has at most 63 characters", long), got.Rejected[0].Reason)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		rrs, dups, err := api.requests(ctx, ns, fallback)
		require.NoError(c, err)
		require.Empty(c, dups)
		var targets []string
		for _, rr := range rrs {
			targets = append(targets, rr.Namespace+"/"+rr.Spec.Target.Name)
		}
		assert.ElementsMatch(c, []string{ns + "/api-0", ns + "/api-2"}, targets)
	}, 10*time.Second, 50*time.Millisecond, "the siblings' requests")
	assert.Zero(t, testenv.MetricValue(t, pl.MetricsURL, "stormweir_dlq_messages", map[string]string{"stage": "writer"}), "writer DLQ")
	assert.Equal(t, 1.0, testenv.MetricValue(t, pl.MetricsURL, "stormweir_receiver_signals_total", map[string]string{"source": "alertmanager", "result": "rejected"}))
}
