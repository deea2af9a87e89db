package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dlq"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/test/testenv"
)

// post sends alerts to the receiver as one webhook and requires a 202.
func post(t testing.TB, url string, alerts ...loadgen.Alert) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(loadgen.NewWebhook(alerts...).JSON()))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "the receiver stored the signals")
}

// TestDLQ_retryCompletesATransientFailureOnce runs the whole pipeline
// (`stormweir run` with its state in a Redis of the test's own, writing
// to a real API server) and reads its DLQ over the embedded NATS's
// listener, as `stormweir dlq` does.
//
// Timeline (bus.consumer.max_deliver 3, retries 50-100ms, the signals'
// duplicate window 1s):
//
//	t=0    Redis is down; one alert is posted and accepted.
//	≤10s   the deduper gives up on it after 3 deliveries: one DLQ entry
//	       (stage deduper, the reason names the store), its
//	       stormweir_dlq_messages is 1, and no request exists.
//	       Redis comes back (empty).
//	retry  refused while the signals stream still remembers the message
//	       id (nothing written), then done: the entry is gone.
//	≤10s   exactly one request, counting one occurrence; the gauge is 0.
//	again  the same selection finds nothing to retry; the entry as read
//	       before (a retry stopped before removing it) is retried again:
//	       once every stage has settled everything, still one request
//	       counting one occurrence, and no new DLQ entry.
func TestDLQ_retryCompletesATransientFailureOnce(t *testing.T) {
	ctx := context.Background()
	api := startAPIServer(t)
	id := testenv.RandomID()[:6]
	ns := api.namespace(t, "pay-"+id, map[string]string{"environment": "production"})
	fallback := api.namespace(t, "fb-"+id, nil)
	rd := testenv.StartRedisServer(t)

	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.AllInOne.DataDir = t.TempDir()
	cfg.AllInOne.Store = "redis"
	cfg.AllInOne.Sink = "kubernetes"
	cfg.AllInOne.NATSListen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Redis.Addrs = []string{rd.Addr}
	cfg.Redis.KeyPrefix = "dlq" + id
	cfg.Writer.Kubeconfig = api.Kubeconfig
	cfg.Writer.FallbackNamespace = fallback
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	cfg.Receiver.ShutdownTimeout = 2 * time.Second
	cfg.Worker.DrainTimeout = 2 * time.Second
	cfg.Bus.Consumer.MaxDeliver = 3
	cfg.Bus.Consumer.RetryDelays = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}
	cfg.Bus.Signals.DuplicateWindow = time.Second
	pl := startPipeline(t, cfg)

	// The DLQ as an operator reaches it: over the embedded server's
	// listener, with the pipeline's prefix.
	cli := cfg.Bus
	cli.URL = "nats://" + cfg.AllInOne.NATSListen
	conn, err := bus.Connect(cli, cli.Prefix+"-dlq", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	q, err := dlq.Open(ctx, conn.JS, cli.Prefix)
	require.NoError(t, err)
	subj := bus.NewSubjects(cli.Prefix)
	dlqDepth := func() float64 {
		return testenv.MetricValue(t, pl.MetricsURL, "stormweir_dlq_messages", map[string]string{"stage": "deduper"})
	}
	requests := func() []string {
		got, dups, err := api.requests(ctx, ns, fallback)
		require.NoError(t, err)
		require.Empty(t, dups, "a fingerprint with two requests")
		var out []string
		for _, rr := range got {
			_, count, _ := state(rr)
			out = append(out, fmt.Sprintf("%s/%s count=%d", rr.Namespace, rr.Name, count))
		}
		return out
	}

	// t=0: Redis down, one alert.
	rd.Stop()
	alert := loadgen.PodAlert("KubePodCrashLooping", ns, "api-0", time.Now())
	post(t, pl.WebhookURL, alert)

	sel, err := review.ParseMatchers(fmt.Sprintf(`alertname="KubePodCrashLooping",namespace=%q,pod="api-0"`, ns))
	require.NoError(t, err)
	filter := dlq.Filter{Selector: review.Selector{Matchers: sel}}
	var entry *dlq.Entry
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var es []*dlq.Entry
		_, err := q.Scan(ctx, filter, func(e *dlq.Entry) error { es = append(es, e); return nil })
		require.NoError(c, err)
		require.Len(c, es, 1, "DLQ entries of the alert")
		entry = es[0]
	}, 10*time.Second, 50*time.Millisecond, "the deduper gives up after 3 deliveries")
	assert.Equal(t, "deduper", entry.Stage)
	assert.Contains(t, entry.Reason, "gave up after 3 deliveries: deciding on signal")
	assert.Equal(t, subj.Signals("alertmanager"), entry.Subject)
	require.Eventually(t, func() bool { return dlqDepth() == 1 }, 10*time.Second, 50*time.Millisecond, "stormweir_dlq_messages{stage=deduper}")
	assert.Empty(t, requests(), "nothing was written for the dead-lettered alert")

	// Redis is back. A retry while the signals stream still remembers
	// the id is refused and writes nothing; it works once the window is
	// over.
	rd.Start()
	var res dlq.Result
	refused := 0
	require.Eventually(t, func() bool {
		var rem *dlq.RememberedError
		res, err = q.Retry(ctx, entry)
		if errors.As(err, &rem) {
			refused++
			return false
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "the retry, once the stream forgot the id")
	require.NoError(t, err)
	assert.Equal(t, dlq.Retried, res.Outcome)
	t.Logf("retried after %d refusals within the duplicate window", refused)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Len(c, requests(), 1)
	}, 10*time.Second, 50*time.Millisecond, "one request after the retry")
	require.Eventually(t, func() bool { return dlqDepth() == 0 }, 10*time.Second, 50*time.Millisecond, "the DLQ depth falls")

	// Again: the selection is empty; the stale entry changes nothing.
	n := 0
	_, err = q.Scan(ctx, filter, func(*dlq.Entry) error { n++; return nil })
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left to retry")
	res, err = q.Retry(ctx, entry)
	require.NoError(t, err)
	t.Logf("the stale entry retried again: %s (signal stored at %d)", res.Outcome, res.Seq)
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamSignals), "deduper", 10*time.Second)
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamIncidents), "aggregator", 10*time.Second, subj.AllDedup())
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamIncidents), "writer", 10*time.Second, subj.AllIncidents())
	got := requests()
	if assert.Len(t, got, 1, "one request") {
		assert.Contains(t, got[0], " count=1", "one occurrence")
	}
	n = 0
	_, err = q.Scan(ctx, dlq.Filter{}, func(*dlq.Entry) error { n++; return nil })
	require.NoError(t, err)
	assert.Zero(t, n, "no stage dead-lettered anything more")
}
