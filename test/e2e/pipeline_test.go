package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/writer"
	"github.com/stormweir/stormweir/test/testenv"
)

// apiServer is a real kube-apiserver and etcd (envtest) with the
// RemediationRequest CRD installed, and a kubeconfig file for it, as an
// operator would hand one to stormweir.
type apiServer struct {
	// Kubeconfig is the path of a kubeconfig for a cluster admin.
	Kubeconfig string
	// Client reads and sets up objects for the test.
	Client client.Client
}

// startAPIServer starts the control plane from $KUBEBUILDER_ASSETS
// (hack/test-deps.sh prints it) and stops it at cleanup.
func startAPIServer(t testing.TB) *apiServer {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: this test needs a real kube-apiserver and etcd.\n" +
			"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "deploy", "crd")},
		ErrorIfCRDPathMissing: true,
		Scheme:                writer.Scheme(),
		ControlPlane:          envtest.ControlPlane{APIServer: &envtest.APIServer{StopTimeout: 3 * time.Second}},
	}
	rc, err := env.Start()
	require.NoError(t, err, "starting the test control plane (KUBEBUILDER_ASSETS=%s)", os.Getenv("KUBEBUILDER_ASSETS"))
	t.Cleanup(func() { _ = env.Stop() })

	user, err := env.AddUser(envtest.User{Name: "stormweir-e2e", Groups: []string{"system:masters"}}, nil)
	require.NoError(t, err, "adding a kubeconfig user")
	kc, err := user.KubeConfig()
	require.NoError(t, err, "rendering the kubeconfig")
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, kc, 0o600))

	rc.QPS, rc.Burst = 200, 400
	c, err := client.New(rc, client.Options{Scheme: writer.Scheme()})
	require.NoError(t, err)
	return &apiServer{Kubeconfig: path, Client: c}
}

// namespace creates a namespace with labels, deleted at cleanup.
func (a *apiServer) namespace(t testing.TB, name string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	require.NoError(t, a.Client.Create(context.Background(), ns), "creating namespace %s", name)
	t.Cleanup(func() { _ = a.Client.Delete(context.Background(), ns) })
	return name
}

// requests returns the RemediationRequests in the namespaces, by
// spec.fingerprint; a fingerprint with two requests is reported in dups.
func (a *apiServer) requests(ctx context.Context, namespaces ...string) (byFP map[string]v1alpha1.RemediationRequest, dups []string, err error) {
	byFP = map[string]v1alpha1.RemediationRequest{}
	for _, ns := range namespaces {
		var l v1alpha1.RemediationRequestList
		if err := a.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return nil, nil, fmt.Errorf("listing requests in %s: %w", ns, err)
		}
		for _, rr := range l.Items {
			if _, dup := byFP[rr.Spec.Fingerprint]; dup {
				dups = append(dups, rr.Namespace+"/"+rr.Name)
			}
			byFP[rr.Spec.Fingerprint] = rr
		}
	}
	return byFP, dups, nil
}

// pipeline is `stormweir run` in-process: every stage on an embedded
// JetStream, writing to the API server.
type pipeline struct {
	// WebhookURL is where Alertmanager posts.
	WebhookURL string
	// MetricsURL serves the metrics of every stage.
	MetricsURL string
}

// startPipeline runs allinone.Run until the test ends.
func startPipeline(t testing.TB, cfg config.Config) *pipeline {
	t.Helper()
	require.NoError(t, cfg.Validate())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	addr := make(chan string, 1)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		done <- allinone.Run(ctx, cfg, log, allinone.Options{Ready: func(a string) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "stormweir run stopped with an error")
		case <-time.After(30 * time.Second):
			t.Error("stormweir run did not stop within 30s")
		}
	})
	select {
	case a := <-addr:
		return &pipeline{WebhookURL: "http://" + a + receiver.PathAlertmanager, MetricsURL: "http://" + a + "/metrics"}
	case err := <-done:
		t.Fatalf("stormweir run stopped during start-up: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("stormweir run not ready within 60s")
	}
	return nil
}

// want is an alert and the request it must become.
type want struct {
	alert       testenv.Alert
	fingerprint string
	target      signal.Target
	severity    v1alpha1.Severity
	environment string
	priority    string
}

// podAlert is an alert about one pod (or, with kind "deployment", one
// deployment) as Prometheus would post it.
func podAlert(name, ns, kind, target, severity string, startsAt time.Time) testenv.Alert {
	return testenv.Alert{
		Labels: map[string]string{
			"alertname": name, "cluster": "prod-eu-1", "namespace": ns,
			kind: target, "severity": severity,
		},
		Annotations:  map[string]string{"summary": name + " on " + ns + "/" + target},
		StartsAt:     startsAt,
		GeneratorURL: "http://prometheus:9090/graph?g0.expr=" + name,
	}
}

// expect derives what the request of a must be: its fingerprint by DESIGN
// §2 from the labels, its priority by DESIGN §5's default matrix.
func expect(cfg config.Config, a testenv.Alert, environment, priority string) want {
	fp := signal.MustFingerprinter(cfg.Fingerprint.Labels)
	target := signal.TargetFromLabels(a.Labels)
	return want{
		alert: a,
		fingerprint: fp.Fingerprint(&signal.Signal{
			Name: a.Labels["alertname"], Namespace: target.Namespace, Labels: a.Labels, Target: target,
		}),
		target:      target,
		severity:    v1alpha1.Severity(a.Labels["severity"]),
		environment: environment,
		priority:    priority,
	}
}

func alertsOf(ws []want) []testenv.Alert {
	out := make([]testenv.Alert, len(ws))
	for i, w := range ws {
		out[i] = w.alert
	}
	return out
}

func fingerprintsOf(ws []want) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.fingerprint
	}
	return out
}

// state is a request's signal state and occurrence count, "" and 0 when
// status has not been written yet.
func state(rr v1alpha1.RemediationRequest) (v1alpha1.SignalState, int64, int64) {
	var st v1alpha1.SignalState
	if rr.Status.Signal != nil {
		st = rr.Status.Signal.State
	}
	var count, flaps int64
	if rr.Status.Occurrences != nil {
		count, flaps = rr.Status.Occurrences.Count, rr.Status.Occurrences.Flaps
	}
	return st, count, flaps
}

// TestPipeline_alertmanagerToRemediationRequests runs the whole pipeline
// (`stormweir run`: receiver, deduper, aggregator and writer on an
// embedded JetStream) between the real Alertmanager and a real API server,
// once with Redis holding the state and once in memory.
//
// Timeline (Alertmanager flushes a group at most 1s after it changes;
// typical times seen in parentheses):
//
//	t=0     Prometheus posts 7 distinct alerts (5 names, 3 namespaces, pods
//	        and a deployment) and a storm: 8 pods of one alertname in one
//	        namespace, with aggregator.rate_threshold 3.
//	≤10s    (1-3s) 7 requests, one each, with the right signal, target,
//	        environment and priority; 3 precursors of the storm as requests
//	        of their own and ONE storm request listing all 8 pods, 5 of them
//	        members. Nothing else.
//	+≤10s   (4s) the storm closes 3s after its last member (closedAt set).
//	+≤10s   (1s) one alert resolves: its request shows the signal resolved.
//	+≤10s   (1s) it fires again (a new startsAt): the same request counts 2
//	        occurrences and 1 flap. Alertmanager re-sent the unchanged
//	        alerts of its group with each change; they count nothing.
//	+≤10s   (1s) everything resolves: every request shows the signal
//	        resolved, still no request was added, nothing went to a DLQ.
func TestPipeline_alertmanagerToRemediationRequests(t *testing.T) {
	api := startAPIServer(t)
	for _, store := range []string{"redis", "memory"} {
		t.Run(store, func(t *testing.T) { runPipelineScenario(t, api, store) })
	}
}

func runPipelineScenario(t *testing.T, api *apiServer, store string) {
	ctx := context.Background()
	id := testenv.RandomID()[:6]
	shop := api.namespace(t, "shop-"+id, map[string]string{"environment": "production"})
	qa := api.namespace(t, "qa-"+id, map[string]string{"environment": "staging"})
	sandbox := api.namespace(t, "sandbox-"+id, nil)
	batch := api.namespace(t, "batch-"+id, map[string]string{"environment": "production"})
	fallback := api.namespace(t, "fb-"+id, nil)

	cfg := config.Default()
	cfg.Log.Level = "warn"
	cfg.AllInOne.DataDir = t.TempDir()
	cfg.AllInOne.Store = store
	cfg.AllInOne.Sink = "kubernetes"
	cfg.Writer.Kubeconfig = api.Kubeconfig
	cfg.Writer.FallbackNamespace = fallback
	cfg.Writer.QPS, cfg.Writer.Burst = 200, 400
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	cfg.Receiver.ShutdownTimeout = 2 * time.Second
	cfg.Worker.DrainTimeout = 2 * time.Second
	cfg.Aggregator.RateThreshold = 3
	cfg.Aggregator.InactivityTimeout = 3 * time.Second
	if store == "redis" {
		rd := testenv.LocalRedis(t)
		cfg.Redis.Addrs = []string{rd.Addr}
		cfg.Redis.KeyPrefix = rd.Prefix
	}
	pl := startPipeline(t, cfg)
	am := testenv.StartAlertmanager(t, pl.WebhookURL, token)

	// t=0: 7 distinct alerts and a storm of 8, in one post.
	t0 := time.Now()
	startsAt := t0.Add(-time.Minute).UTC().Truncate(time.Second)
	distinct := []want{
		expect(cfg, podAlert("KubePodCrashLooping", shop, "pod", "api-0", "critical", startsAt), "production", "P0"),
		expect(cfg, podAlert("KubePodCrashLooping", shop, "pod", "api-1", "critical", startsAt), "production", "P0"),
		expect(cfg, podAlert("KubePodNotReady", shop, "pod", "web-0", "warning", startsAt), "production", "P1"),
		expect(cfg, podAlert("CPUThrottlingHigh", shop, "pod", "worker-0", "info", startsAt), "production", "P3"),
		expect(cfg, podAlert("KubeDeploymentReplicasMismatch", shop, "deployment", "checkout", "warning", startsAt), "production", "P1"),
		expect(cfg, podAlert("KubePodCrashLooping", qa, "pod", "api-0", "critical", startsAt), "staging", "P1"),
		expect(cfg, podAlert("KubePodNotReady", sandbox, "pod", "web-0", "warning", startsAt), "unknown", "P2"),
	}
	flapper := distinct[0]
	var storm []want
	for i := range 8 {
		storm = append(storm, expect(cfg, podAlert("KubeContainerWaiting", batch, "pod", fmt.Sprintf("job-%d", i), "warning", startsAt), "production", "P1"))
	}
	am.PostAlerts(t, append(alertsOf(distinct), alertsOf(storm)...))

	// ≤10s: 7 + 3 precursors + 1 storm request, and they stay that many.
	namespaces := []string{shop, qa, sandbox, batch, fallback}
	var stormRR v1alpha1.RemediationRequest
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, dups, err := api.requests(ctx, namespaces...)
		require.NoError(c, err)
		assert.Empty(c, dups, "a fingerprint has two requests")
		assert.Len(c, got, 11)
		for _, w := range distinct {
			_, ok := got[w.fingerprint]
			assert.True(c, ok, "request for %s", w.target)
		}
		storms := 0
		for _, rr := range got {
			if rr.Spec.Storm != nil {
				storms++
				stormRR = rr
			}
		}
		assert.Equal(c, 1, storms, "storm requests")
		if assert.NotNil(c, stormRR.Status.Storm, "storm status") {
			assert.EqualValues(c, 5, stormRR.Status.Storm.Members)
		}
	}, 10*time.Second, 100*time.Millisecond, "requests after posting at t=0")
	t.Logf("t=%s: 11 requests", time.Since(t0).Round(10*time.Millisecond))

	got, _, err := api.requests(ctx, namespaces...)
	require.NoError(t, err)
	for _, w := range distinct {
		rr := got[w.fingerprint]
		assert.Equal(t, w.target.Namespace, rr.Namespace, "%s is placed in its namespace", w.target)
		assert.Equal(t, v1alpha1.SignalRef{Name: w.alert.Labels["alertname"], Source: "alertmanager", Severity: w.severity}, rr.Spec.Signal)
		assert.Equal(t, v1alpha1.Target{Kind: w.target.Kind, Name: w.target.Name, Namespace: w.target.Namespace}, rr.Spec.Target)
		assert.Equal(t, w.environment, rr.Spec.Environment, "%s", w.target)
		assert.Equal(t, w.priority, rr.Spec.Priority, "%s: %s × %s", w.target, w.severity, w.environment)
		assert.Equal(t, w.alert.Labels, rr.Spec.Labels)
		assert.True(t, startsAt.Equal(rr.Spec.FiringTime.Time), "%s firingTime %s, want %s", w.target, rr.Spec.FiringTime, startsAt)
		assert.Nil(t, rr.Spec.Storm)
		st, count, _ := state(rr)
		assert.Equal(t, v1alpha1.SignalFiring, st, "%s", w.target)
		assert.EqualValues(t, 1, count, "%s", w.target)
	}

	// The storm: the first 3 incidents of the scope stay individual, the
	// rest fold into one storm request that lists every pod of the scope.
	var precursors []string
	stormFPs := map[string]want{}
	for _, w := range storm {
		stormFPs[w.fingerprint] = w
	}
	for fp, rr := range got {
		if w, ok := stormFPs[fp]; ok {
			precursors = append(precursors, w.target.Name)
			assert.Equal(t, batch, rr.Namespace)
			assert.Equal(t, "P1", rr.Spec.Priority)
			assert.Nil(t, rr.Spec.Storm, "a precursor is an individual request")
		}
	}
	assert.Len(t, precursors, 3, "precursors of the storm")
	assert.Equal(t, batch, stormRR.Namespace)
	if assert.NotNil(t, stormRR.Spec.Storm) {
		assert.Equal(t, v1alpha1.StormType("rate"), stormRR.Spec.Storm.Type)
		assert.Equal(t, map[string]string{"alertname": "KubeContainerWaiting", "namespace": batch}, stormRR.Spec.Storm.Scope)
	}
	assert.Equal(t, "KubeContainerWaiting", stormRR.Spec.Signal.Name)
	assert.Equal(t, "production", stormRR.Spec.Environment)
	assert.Equal(t, "P1", stormRR.Spec.Priority, "warning × production")
	if assert.NotNil(t, stormRR.Status.Storm) {
		s := stormRR.Status.Storm
		assert.EqualValues(t, 5, s.Members, "incidents folded into the storm")
		assert.EqualValues(t, 5, s.Occurrences)
		assert.EqualValues(t, 8, s.AffectedTotal, "every pod of the scope, precursors included")
		var wantAffected []v1alpha1.Target
		for _, w := range storm {
			wantAffected = append(wantAffected, v1alpha1.Target{Kind: "Pod", Name: w.target.Name, Namespace: batch})
		}
		assert.ElementsMatch(t, wantAffected, s.Affected)
	}

	// The storm window closes 3s after its last member.
	stormKey := client.ObjectKeyFromObject(&stormRR)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var rr v1alpha1.RemediationRequest
		require.NoError(c, api.Client.Get(ctx, stormKey, &rr))
		if assert.NotNil(c, rr.Status.Storm) {
			assert.NotNil(c, rr.Status.Storm.ClosedAt, "storm closedAt")
			assert.EqualValues(c, 5, rr.Status.Storm.Members, "a closed storm keeps its members")
		}
	}, 10*time.Second, 100*time.Millisecond, "storm closed after 3s of inactivity")
	t.Logf("t=%s: storm closed", time.Since(t0).Round(10*time.Millisecond))

	// The flapper resolves...
	byFP := func(c *assert.CollectT, fp string) v1alpha1.RemediationRequest {
		got, dups, err := api.requests(ctx, namespaces...)
		require.NoError(c, err)
		assert.Empty(c, dups)
		assert.Len(c, got, 11, "no request was added")
		return got[fp]
	}
	am.Resolve(t, []testenv.Alert{flapper.alert}, time.Now().Add(-time.Second))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, count, _ := state(byFP(c, flapper.fingerprint))
		assert.Equal(c, v1alpha1.SignalResolved, st)
		assert.EqualValues(c, 1, count)
	}, 10*time.Second, 100*time.Millisecond, "%s resolved", flapper.target)
	t.Logf("t=%s: %s/%s resolved", time.Since(t0).Round(10*time.Millisecond), shop, flapper.target.Name)

	// ...and fires again: a new startsAt, so a new occurrence of the same
	// incident within the reopen window.
	refire := flapper.alert
	refire.StartsAt = time.Now().UTC()
	am.PostAlerts(t, []testenv.Alert{refire})
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st, count, flaps := state(byFP(c, flapper.fingerprint))
		assert.Equal(c, v1alpha1.SignalFiring, st)
		assert.EqualValues(c, 2, count, "occurrences")
		assert.EqualValues(c, 1, flaps, "flaps")
	}, 10*time.Second, 100*time.Millisecond, "%s fired again", flapper.target)
	t.Logf("t=%s: %s/%s firing again, 2 occurrences", time.Since(t0).Round(10*time.Millisecond), shop, flapper.target.Name)

	// Alertmanager re-sent its group (api-1 and qa's api-0 share the
	// alertname) with each change: unchanged alerts count nothing.
	got, _, err = api.requests(ctx, namespaces...)
	require.NoError(t, err)
	for _, w := range distinct[1:] {
		_, count, _ := state(got[w.fingerprint])
		assert.EqualValues(t, 1, count, "%s: re-sent unchanged by Alertmanager, not a new occurrence", w.target)
	}
	signals := func(result string) float64 {
		return testenv.MetricValue(t, pl.MetricsURL, "stormweir_receiver_signals_total", map[string]string{"source": "alertmanager", "result": result})
	}
	assert.Equal(t, 17.0, signals("accepted"), "15 firing at t=0, the flapper's resolution and its new firing")
	assert.GreaterOrEqual(t, signals("duplicate"), 2.0, "the group's unchanged alerts, re-sent and absorbed by msg-id")

	// Everything resolves: every request shows it, none is added.
	am.Resolve(t, append(alertsOf(distinct), alertsOf(storm)...), time.Now().Add(-time.Second))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, dups, err := api.requests(ctx, namespaces...)
		require.NoError(c, err)
		assert.Empty(c, dups)
		assert.Len(c, got, 11, "no request was added")
		for _, w := range append(distinct[:len(distinct):len(distinct)], storm...) {
			rr, ok := got[w.fingerprint]
			if !ok {
				continue // a storm member: counted on the storm request
			}
			st, _, _ := state(rr)
			assert.Equal(c, v1alpha1.SignalResolved, st, "%s", w.target)
			if assert.NotNil(c, rr.Status.Signal) {
				assert.NotNil(c, rr.Status.Signal.ResolvedAt, "%s resolvedAt", w.target)
			}
		}
	}, 10*time.Second, 100*time.Millisecond, "every request resolved")
	t.Logf("t=%s: all resolved", time.Since(t0).Round(10*time.Millisecond))

	got, _, err = api.requests(ctx, namespaces...)
	require.NoError(t, err)
	_, count, flaps := state(got[flapper.fingerprint])
	assert.EqualValues(t, 2, count, "the flapper keeps its 2 occurrences")
	assert.EqualValues(t, 1, flaps)
	assert.Equal(t, 32.0, signals("accepted"), "and 15 resolutions")
	assert.Equal(t, 11.0, testenv.MetricValue(t, pl.MetricsURL, "stormweir_writer_crs_created_total", nil), "creates")
	assert.Equal(t, 0.0, testenv.MetricValue(t, pl.MetricsURL, "stormweir_worker_messages_total", map[string]string{"result": "dlq"}), "DLQ")
	assert.Equal(t, 0.0, am.Metric(t, "alertmanager_notifications_failed_total", map[string]string{"integration": "webhook"}))
	if t.Failed() {
		for _, rr := range got {
			t.Logf("%s/%s: spec=%+v status=%+v", rr.Namespace, rr.Name, rr.Spec, rr.Status)
		}
	}
}
