package review_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/writer"
	"github.com/stormweir/stormweir/test/testenv"
)

// One API server for the package, as in the writer's tests, started by
// the first test that records a pipeline (the selector tests and the
// benchmark need none) and stopped when the package's tests end.
var (
	testRest *rest.Config
	admin    client.Client
)

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupMu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanupMu.Unlock()
	os.Exit(code)
}

// startAPIServer starts the package's API server.
func startAPIServer(t testing.TB) {
	t.Helper()
	require.NotEmpty(t, os.Getenv("KUBEBUILDER_ASSETS"), "KUBEBUILDER_ASSETS is not set: the review tests record a real pipeline, writer included.\n"+
		"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "deploy", "crd")},
		ErrorIfCRDPathMissing: true,
		Scheme:                writer.Scheme(),
	}
	var err error
	testRest, err = env.Start()
	require.NoError(t, err, "starting the test control plane")
	cleanupMu.Lock()
	cleanups = append(cleanups, func() { _ = env.Stop() })
	cleanupMu.Unlock()
	testRest.QPS, testRest.Burst = 1000, 2000
	admin, err = client.New(testRest, client.Options{Scheme: writer.Scheme()})
	require.NoError(t, err)
}

// start is the fake time of every recording: steps happen at whole
// minutes after it, so the timelines are the same on every run.
var start = time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)

// recording is a pipeline run whose streams the tests review: the four
// stages in-process (app.Build, memory stores) on a fake clock, an
// in-process nats-server and the real API server.
type recording struct {
	t      testing.TB
	cfg    config.Config
	clk    *clock.Fake
	nc     *nats.Conn
	js     jetstream.JetStream
	url    string
	ns     string // the namespace of the scenarios
	client *http.Client
	stop   func()
}

// startRecording runs the pipeline; stop ends the stages, the streams stay.
func startRecording(t testing.TB) *recording {
	t.Helper()
	nt := testenv.StartNATS(t)
	id := testenv.RandomID()[:6]
	cfg := testenv.Config(nt.URL)
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Disabled = true
	cfg.Writer.FallbackNamespace = "fb-" + id
	cfg.Writer.QPS, cfg.Writer.Burst = 1000, 2000
	require.NoError(t, cfg.Validate())
	r := &recording{t: t, cfg: cfg, clk: clock.NewFake(start), ns: "prod-" + id, client: &http.Client{Transport: &http.Transport{}}}
	for _, ns := range []string{r.ns, cfg.Writer.FallbackNamespace} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		require.NoError(t, admin.Create(context.Background(), obj))
		t.Cleanup(func() { _ = admin.Delete(context.Background(), obj) })
	}

	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := app.New(ctx, cfg, log, "review-test", app.Options{Clock: r.clk, MemoryStores: true, RestConfig: testRest})
	require.NoError(t, err)
	stages, err := a.Build(ctx, app.Stages...)
	require.NoError(t, err)
	addr, err := a.HealthAddr()
	require.NoError(t, err)
	r.url = "http://" + addr
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, stages...) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			r.client.CloseIdleConnections()
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Errorf("the pipeline did not stop within 30s")
			}
			a.Close()
		})
	}
	t.Cleanup(r.stop)
	require.Eventually(t, func() bool {
		resp, err := r.client.Get(r.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "pipeline not ready")

	r.nc, err = nats.Connect(nt.URL)
	require.NoError(t, err)
	t.Cleanup(r.nc.Close)
	r.js, err = jetstream.New(r.nc)
	require.NoError(t, err)
	return r
}

// alert is one Alertmanager alert of a test webhook.
type alert struct {
	name, pod, status string
	startsAt, endsAt  time.Time
	severity          string
}

// post sends alerts in one webhook at fake time at and returns the
// receiver's status code.
func (r *recording) post(at time.Time, alerts ...alert) int {
	r.t.Helper()
	r.at(at)
	type amAlert struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
		EndsAt      time.Time         `json:"endsAt"`
		Fingerprint string            `json:"fingerprint"`
	}
	body := map[string]any{"version": "4", "status": "firing", "receiver": "stormweir", "groupKey": "{}:{}"}
	var list []amAlert
	for _, a := range alerts {
		sev := a.severity
		if sev == "" {
			sev = "critical"
		}
		list = append(list, amAlert{
			Status:      a.status,
			Labels:      map[string]string{"alertname": a.name, "namespace": r.ns, "pod": a.pod, "severity": sev, "cluster": "eu-1"},
			Annotations: map[string]string{"summary": a.name + " on " + a.pod}, StartsAt: a.startsAt, EndsAt: a.endsAt,
			Fingerprint: fmt.Sprintf("%x", a.name+a.pod)[:16],
		})
	}
	body["alerts"] = list
	b, err := json.Marshal(body)
	require.NoError(r.t, err)
	resp, err := r.client.Post(r.url+receiver.PathAlertmanager, "application/json", bytes.NewReader(b))
	require.NoError(r.t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// at moves the fake clock to t, never back: a wait may have moved it past.
func (r *recording) at(t time.Time) {
	if t.After(r.clk.Now()) {
		r.clk.Set(t)
	}
}

// routed replays the streams until cond holds, without moving the clock:
// the deduper's and the aggregator's routing waits on nothing of it.
func (r *recording) routed(what string, cond func(*review.Replay) bool) {
	r.t.Helper()
	r.wait(what, cond, 0)
}

// until replays the streams until cond holds, moving the fake clock by
// 100ms between reads so that what waits for a spacing or a sweep on it
// happens.
func (r *recording) until(what string, cond func(*review.Replay) bool) {
	r.t.Helper()
	r.wait(what, cond, 100*time.Millisecond)
}

func (r *recording) wait(what string, cond func(*review.Replay) bool, step time.Duration) {
	r.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, err := review.Read(ctx, r.js, r.cfg.Bus.Prefix, review.Selector{}, nil)
		if err == nil && cond(rep) {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			if rep != nil {
				_ = review.Render(&b, rep.Timelines, review.FormatTable)
			}
			r.t.Fatalf("waiting for %s (last error %v); recorded:\n%s", what, err, b.String())
		}
		if step > 0 {
			r.clk.Advance(step)
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not a wait for the result
	}
}

// has reports whether some timeline has a row of event whose detail
// contains detail.
func has(rep *review.Replay, event, detail string) bool {
	return count(rep, event, detail) > 0
}

func count(rep *review.Replay, event, detail string) int {
	n := 0
	for _, t := range rep.Timelines {
		for _, row := range t.Rows {
			if row.Event == event && strings.Contains(row.Detail, detail) {
				n++
			}
		}
	}
	return n
}

// stormWrites counts the status writes of the storm's request.
func stormWrites(rep *review.Replay) int {
	for _, t := range rep.Timelines {
		if t.Kind == review.KindStorm {
			n := 0
			for _, row := range t.Rows {
				if row.Event == review.EventUpdated {
					n++
				}
			}
			return n
		}
	}
	return 0
}

// scenario records the four stories the tests review, one after the
// other: a new incident that repeats once, a flap, a storm of twelve pods
// (ten stay individual, the eleventh opens the storm, the twelfth joins
// it) and a rejected alert.
type scenario struct {
	*recording
	// storm lists the storm's incidents in the order they were decided.
	stormIncidents []string
}

var (
	recordOnce sync.Once
	recorded   *scenario
)

// recordScenario records the scenario once for the package's tests.
func recordScenario(t *testing.T) *scenario {
	t.Helper()
	recordOnce.Do(func() {
		// The recording outlives the test that made it: its NATS server
		// and namespaces are cleaned up when the package's tests end.
		tb := &packageTB{TB: t}
		startAPIServer(tb)
		s := &scenario{recording: startRecording(tb)}
		s.run()
		s.stop()
		recorded = s
	})
	if recorded == nil {
		t.Fatal("the recording failed in an earlier test")
	}
	return recorded
}

func (s *scenario) run() {
	t := s.t
	at := func(m int) time.Time { return start.Add(time.Duration(m) * time.Minute) }
	fired := start.Add(-10 * time.Minute)

	// A new incident, repeated once a minute later.
	require.Equal(t, http.StatusAccepted, s.post(at(0), alert{name: "KubePodCrashLooping", pod: "api-0", status: "firing", startsAt: fired}))
	s.until("the crash loop's request", func(r *review.Replay) bool {
		return has(r, review.EventCreated, "KubePodCrashLooping") || count(r, review.EventCreated, "") == 1
	})
	require.Equal(t, http.StatusAccepted, s.post(at(1), alert{name: "KubePodCrashLooping", pod: "api-0", status: "firing", startsAt: fired.Add(time.Minute)}))
	s.until("the repeat's write", func(r *review.Replay) bool { return count(r, review.EventUpdated, "") == 1 })

	// A flap: firing, resolved, firing again within the reopen window.
	flapStart := at(2).Add(-time.Minute)
	require.Equal(t, http.StatusAccepted, s.post(at(2), alert{name: "KubeDeploymentReplicasMismatch", pod: "web-0", status: "firing", startsAt: flapStart}))
	s.until("the flapping request", func(r *review.Replay) bool { return count(r, review.EventCreated, "") == 2 })
	require.Equal(t, http.StatusAccepted, s.post(at(3), alert{name: "KubeDeploymentReplicasMismatch", pod: "web-0", status: "resolved", startsAt: flapStart, endsAt: at(3)}))
	s.until("the resolve's write", func(r *review.Replay) bool {
		return has(r, review.EventResolved, "") && count(r, review.EventUpdated, "") == 2
	})
	require.Equal(t, http.StatusAccepted, s.post(at(4), alert{name: "KubeDeploymentReplicasMismatch", pod: "web-0", status: "firing", startsAt: at(4)}))
	s.until("the reopen's write", func(r *review.Replay) bool {
		return has(r, review.EventReopened, "") && count(r, review.EventUpdated, "") == 3
	})

	// A storm: twelve pods of one alertname and namespace, one every
	// second; the default rate threshold is 10.
	for i := range 12 {
		when := at(5).Add(time.Duration(i) * time.Second)
		require.Equal(t, http.StatusAccepted, s.post(when, alert{name: "KubePodNotReady", pod: fmt.Sprintf("worker-%02d", i), status: "firing", startsAt: when, severity: "warning"}))
		n := i + 1
		s.routed(fmt.Sprintf("storm pod %d routed", n), func(r *review.Replay) bool {
			return count(r, review.EventIndividual, "")+count(r, review.EventMember, "") == 2+n
		})
	}
	// Every request written, then the storm closes after a minute without
	// a new member.
	s.until("the storm's writes", func(r *review.Replay) bool {
		return count(r, review.EventCreated, "") == 13 && stormWrites(r) == 1
	})
	s.at(at(8))
	s.until("the storm's close and its write", func(r *review.Replay) bool { return has(r, review.EventStormClose, "") && stormWrites(r) == 2 })

	// A rejected alert beside a valid one.
	require.Equal(t, http.StatusAccepted, s.post(at(9),
		alert{name: "KubeJobFailed", pod: "batch-0", status: "pending", startsAt: at(9)},
		alert{name: "KubeJobFailed", pod: "batch-1", status: "firing", startsAt: at(9)}))
	s.until("the rejection and the valid alert's request", func(r *review.Replay) bool {
		return has(r, review.EventRejected, "") && has(r, review.EventCreated, "")
	})
	s.until("every write", func(r *review.Replay) bool {
		for _, tl := range r.Timelines {
			if tl.Name == "KubeJobFailed" && tl.Request != "" {
				return true
			}
		}
		return false
	})
}

// packageTB runs the recording's cleanups when the package's tests end
// rather than when the test that recorded it ends.
type packageTB struct {
	testing.TB
}

var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func (p *packageTB) Cleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func (p *packageTB) TempDir() string {
	dir, err := os.MkdirTemp("", "stormweir-review-")
	require.NoError(p.TB, err)
	p.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
