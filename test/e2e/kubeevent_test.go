package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/signal"
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

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// startWatcher runs a receiver replica's event watcher (app.Watcher on an
// App of its own, connected to the pipeline's bus over TCP) until the
// returned stop is called, which waits for it to end.
func startWatcher(t *testing.T, cfg config.Config) (stop func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log, "receiver", app.Options{})
	require.NoError(t, err)
	stages, err := a.Build(ctx, app.Watcher)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, stages...) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "the watcher stopped with an error")
		case <-time.After(30 * time.Second):
			t.Error("the watcher did not stop within 30s")
		}
		a.Close()
	}
	t.Cleanup(stop)
	return stop
}

// TestWatcher_restartNeitherLosesNorRecounts watches Warning events in a
// real API server while they are created and counted up, with the
// watcher stopped and started again in the middle, and two replicas
// watching at the end. JetStream's duplicate window is cut to 100ms, so
// the relist after the restart reaches the deduper: it is the per-event
// counts and seen marks that keep every count exact.
//
//	phase 1 (watcher A): events about pods p0..p3 at count 1, then counted
//	        up 3 times; p4's event created at count 7; an Unhealthy
//	        Warning (reason not watched) and a Normal event.
//	A stops (not waiting for it to catch up).
//	phase 2 (no watcher): p0..p3 counted up twice; p5's event created at 3.
//	phase 3 (watchers B and C): p0..p3 counted up twice; p4's event rises
//	        to 9.
//	end:    the deduper has decided every signal on the bus; one request
//	        per pod p0..p5, each with occurrences equal to its event's
//	        count (8, 8, 8, 8, 9, 3); none for the Unhealthy or Normal
//	        events.
func TestWatcher_restartNeitherLosesNorRecounts(t *testing.T) {
	ctx := context.Background()
	api := startAPIServer(t)
	id := testenv.RandomID()[:6]
	ns := api.namespace(t, "watch-"+id, map[string]string{"environment": "production"})
	other := api.namespace(t, "unwatched-"+id, nil)
	fallback := api.namespace(t, "fb-"+id, nil)

	cfg := eventPipelineConfig(t, api, fallback)
	cfg.AllInOne.Watcher = "off"
	cfg.AllInOne.NATSListen = freePort(t)
	cfg.Bus.Signals.DuplicateWindow = 100 * time.Millisecond
	pl := startPipeline(t, cfg)

	wcfg := cfg
	wcfg.Bus.URL = "nats://" + cfg.AllInOne.NATSListen
	wcfg.Bus.ManageStreams = false
	wcfg.Worker.Listen = "127.0.0.1:0"
	wcfg.Watcher.Kubeconfig = api.Kubeconfig
	wcfg.Watcher.Namespaces = []string{ns}
	wcfg.Watcher.Reasons = []string{"BackOff"}
	require.NoError(t, wcfg.Validate())

	first := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	events := map[string]*corev1.Event{}
	create := func(pod string, count int32) {
		e := warning(ns, pod+".backoff", "BackOff", pod, count, first, first.Add(time.Duration(count)*time.Second))
		e.UID, e.TypeMeta = "", metav1.TypeMeta{}
		require.NoError(t, api.Client.Create(ctx, e), "creating the event of %s", pod)
		events[pod] = e
	}
	countUp := func(pods ...string) {
		for _, pod := range pods {
			e := events[pod]
			e.Count++
			e.LastTimestamp = metav1.NewTime(first.Add(time.Duration(e.Count) * time.Second))
			require.NoError(t, api.Client.Update(ctx, e), "counting up the event of %s", pod)
		}
	}
	pods := []string{"p0", "p1", "p2", "p3"}

	// Phase 1, watcher A.
	stopA := startWatcher(t, wcfg)
	for _, pod := range pods {
		create(pod, 1)
	}
	for range 3 {
		countUp(pods...)
	}
	create("p4", 7)
	unhealthy := warning(ns, "p0.unhealthy", "Unhealthy", "p0", 4, first, first)
	unhealthy.UID, unhealthy.TypeMeta = "", metav1.TypeMeta{}
	require.NoError(t, api.Client.Create(ctx, unhealthy))
	normal := warning(ns, "p1.pulled", "BackOff", "p1", 2, first, first)
	normal.UID, normal.TypeMeta, normal.Type = "", metav1.TypeMeta{}, corev1.EventTypeNormal
	require.NoError(t, api.Client.Create(ctx, normal))
	elsewhere := warning(other, "q0.backoff", "BackOff", "q0", 5, first, first)
	elsewhere.UID, elsewhere.TypeMeta = "", metav1.TypeMeta{}
	require.NoError(t, api.Client.Create(ctx, elsewhere))
	stopA()

	// Phase 2, nobody watching.
	countUp(pods...)
	countUp(pods...)
	create("p5", 3)

	// Phase 3, two replicas.
	startWatcher(t, wcfg)
	startWatcher(t, wcfg)
	countUp(pods...)
	countUp(pods...)
	events["p4"].Count = 9
	events["p4"].LastTimestamp = metav1.NewTime(first.Add(9 * time.Second))
	require.NoError(t, api.Client.Update(ctx, events["p4"]))

	want := map[string]int64{"p0": 8, "p1": 8, "p2": 8, "p3": 8, "p4": 9, "p5": 3}
	fpr := signal.MustFingerprinter(cfg.Fingerprint.Labels)
	fingerprint := func(pod string) string {
		tg := signal.Target{Kind: "Pod", Name: pod, Namespace: ns}
		return fpr.Fingerprint(&signal.Signal{Name: "BackOff", Namespace: ns, Target: tg,
			Labels: map[string]string{"reason": "BackOff"}})
	}
	stream := signalsStream(t, wcfg)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		info, err := stream.Info(ctx)
		require.NoError(c, err)
		decided := testenv.MetricValue(t, pl.MetricsURL, "stormweir_dedup_decisions_total", nil)
		// Every message the signals stream ever stored (processed ones
		// leave it; the archive, sourced asynchronously, may drop a copy
		// stored twice within its duplicate window) was decided.
		assert.EqualValues(c, info.State.LastSeq, decided, "the deduper decided every signal on the bus")
		got, dups, err := api.requests(ctx, ns, other, fallback)
		require.NoError(c, err)
		assert.Empty(c, dups, "a fingerprint has two requests")
		assert.Len(c, got, len(want), "one request per watched Warning event")
		for pod, n := range want {
			rr, ok := got[fingerprint(pod)]
			if assert.True(c, ok, "request for %s", pod) {
				_, count, _ := state(rr)
				assert.Equal(c, n, count, "occurrences of %s", pod)
			}
		}
	}, 60*time.Second, 100*time.Millisecond)
}

// signalsStream is the signals stream of cfg's bus, read over TCP: its
// last sequence counts every signal stored, processed or not.
func signalsStream(t *testing.T, cfg config.Config) jetstream.Stream {
	t.Helper()
	nc, err := nats.Connect(cfg.Bus.URL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), bus.NewSubjects(cfg.Bus.Prefix).StreamName(bus.StreamSignals))
	require.NoError(t, err)
	return s
}
