package reviewtest

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
	"runtime"
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

// Shared is one recorded Scenario for a package's tests: the first test
// that asks records it (with an API server of the package's own), the
// others review the same streams, and Close, called from TestMain after
// the tests, stops what the recording started. A test package declares
// one and calls Close:
//
//	var shared reviewtest.Shared
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		shared.Close()
//		os.Exit(code)
//	}
type Shared struct {
	once     sync.Once
	scenario *Scenario

	mu       sync.Mutex
	cleanups []func()
}

// Scenario returns the package's recorded scenario, recording it first.
// The writer writes to a real API server: KUBEBUILDER_ASSETS must name its
// binaries (hack/test-deps.sh builds them).
func (s *Shared) Scenario(t *testing.T) *Scenario {
	t.Helper()
	s.once.Do(func() {
		// The recording outlives the test that made it: its NATS server
		// and namespaces are cleaned up by Close.
		tb := &packageTB{TB: t, shared: s}
		rc, admin := startAPIServer(tb)
		sc := &Scenario{Recording: StartRecording(tb, rc, admin)}
		sc.Record()
		sc.Stop()
		s.scenario = sc
	})
	if s.scenario == nil {
		t.Fatal("the recording failed in an earlier test")
	}
	return s.scenario
}

// Close runs the recording's cleanups, last first.
func (s *Shared) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
}

// packageTB runs the recording's cleanups when the package's tests end
// rather than when the test that recorded it ends.
type packageTB struct {
	testing.TB
	shared *Shared
}

func (p *packageTB) Cleanup(f func()) {
	p.shared.mu.Lock()
	defer p.shared.mu.Unlock()
	p.shared.cleanups = append(p.shared.cleanups, f)
}

func (p *packageTB) TempDir() string {
	dir, err := os.MkdirTemp("", "stormweir-review-")
	require.NoError(p.TB, err)
	p.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// crdDir is deploy/crd of the repository this file is in, wherever the
// test runs from.
func crdDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "crd")
}

// startAPIServer starts an API server with the CRD, stopped at t's
// cleanup, and returns its configuration and an admin client.
func startAPIServer(t testing.TB) (*rest.Config, client.Client) {
	t.Helper()
	require.NotEmpty(t, os.Getenv("KUBEBUILDER_ASSETS"), "KUBEBUILDER_ASSETS is not set: the review tests record a real pipeline, writer included.\n"+
		"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{crdDir()},
		ErrorIfCRDPathMissing: true,
		Scheme:                writer.Scheme(),
	}
	rc, err := env.Start()
	require.NoError(t, err, "starting the test control plane")
	t.Cleanup(func() { _ = env.Stop() })
	rc.QPS, rc.Burst = 1000, 2000
	admin, err := client.New(rc, client.Options{Scheme: writer.Scheme()})
	require.NoError(t, err)
	return rc, admin
}

// Start is the fake time of every recording: steps happen at whole
// minutes after it, so the timelines are the same on every run.
var Start = time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)

// Recording is a pipeline run whose streams the tests review: the four
// stages in-process (app.Build, memory stores) on a fake clock, an
// in-process nats-server and the real API server.
type Recording struct {
	t testing.TB
	// Cfg is the pipeline's configuration (its bus prefix names the
	// streams to review).
	Cfg config.Config
	// Clk is the stages' fake clock.
	Clk *clock.Fake
	NC  *nats.Conn
	JS  jetstream.JetStream
	// URL is the receiver's.
	URL string
	// NS is the namespace of the scenarios' alerts.
	NS     string
	client *http.Client
	// Stop ends the stages; the streams stay.
	Stop func()
}

// StartRecording runs the pipeline against the API server of rc (admin
// creates its namespaces); Stop ends the stages, the streams stay.
func StartRecording(t testing.TB, rc *rest.Config, admin client.Client) *Recording {
	t.Helper()
	nt := testenv.StartNATS(t)
	id := testenv.RandomID()[:6]
	cfg := testenv.Config(nt.URL)
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Disabled = true
	cfg.Writer.FallbackNamespace = "fb-" + id
	cfg.Writer.QPS, cfg.Writer.Burst = 1000, 2000
	require.NoError(t, cfg.Validate())
	r := &Recording{t: t, Cfg: cfg, Clk: clock.NewFake(Start), NS: "prod-" + id, client: &http.Client{Transport: &http.Transport{}}}
	for _, ns := range []string{r.NS, cfg.Writer.FallbackNamespace} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		require.NoError(t, admin.Create(context.Background(), obj))
		t.Cleanup(func() { _ = admin.Delete(context.Background(), obj) })
	}

	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := app.New(ctx, cfg, log, "review-test", app.Options{Clock: r.Clk, MemoryStores: true, RestConfig: rc})
	require.NoError(t, err)
	stages, err := a.Build(ctx, app.Stages...)
	require.NoError(t, err)
	addr, err := a.HealthAddr()
	require.NoError(t, err)
	r.URL = "http://" + addr
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, stages...) }()
	var once sync.Once
	r.Stop = func() {
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
	t.Cleanup(r.Stop)
	require.Eventually(t, func() bool {
		resp, err := r.client.Get(r.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "pipeline not ready")

	r.NC, err = nats.Connect(nt.URL)
	require.NoError(t, err)
	t.Cleanup(r.NC.Close)
	r.JS, err = jetstream.New(r.NC)
	require.NoError(t, err)
	return r
}

// Alert is one Alertmanager alert of a test webhook.
type Alert struct {
	Name, Pod, Status string
	StartsAt, EndsAt  time.Time
	Severity          string
}

// Post sends alerts in one webhook at fake time at and returns the
// receiver's status code.
func (r *Recording) Post(at time.Time, alerts ...Alert) int {
	r.t.Helper()
	r.At(at)
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
		sev := a.Severity
		if sev == "" {
			sev = "critical"
		}
		list = append(list, amAlert{
			Status:      a.Status,
			Labels:      map[string]string{"alertname": a.Name, "namespace": r.NS, "pod": a.Pod, "severity": sev, "cluster": "eu-1"},
			Annotations: map[string]string{"summary": a.Name + " on " + a.Pod}, StartsAt: a.StartsAt, EndsAt: a.EndsAt,
			Fingerprint: fmt.Sprintf("%x", a.Name+a.Pod)[:16],
		})
	}
	body["alerts"] = list
	return r.PostJSON(at, receiver.PathAlertmanager, body)
}

// PostJSON sends body to the receiver's path at fake time at and returns
// the receiver's status code.
func (r *Recording) PostJSON(at time.Time, path string, body any) int {
	r.t.Helper()
	r.At(at)
	b, err := json.Marshal(body)
	require.NoError(r.t, err)
	resp, err := r.client.Post(r.URL+path, "application/json", bytes.NewReader(b))
	require.NoError(r.t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// At moves the fake clock to t, never back: a wait may have moved it past.
func (r *Recording) At(t time.Time) {
	if t.After(r.Clk.Now()) {
		r.Clk.Set(t)
	}
}

// Routed replays the streams until cond holds, without moving the clock:
// the deduper's and the aggregator's routing waits on nothing of it.
func (r *Recording) Routed(what string, cond func(*review.Replay) bool) {
	r.t.Helper()
	r.wait(what, cond, 0)
}

// Until replays the streams until cond holds, moving the fake clock by
// 100ms between reads so that what waits for a spacing or a sweep on it
// happens.
func (r *Recording) Until(what string, cond func(*review.Replay) bool) {
	r.t.Helper()
	r.wait(what, cond, 100*time.Millisecond)
}

func (r *Recording) wait(what string, cond func(*review.Replay) bool, step time.Duration) {
	r.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, err := review.Read(ctx, r.JS, r.Cfg.Bus.Prefix, review.Selector{}, nil)
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
			r.Clk.Advance(step)
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not a wait for the result
	}
}

// Has reports whether some timeline has a row of event whose detail
// contains detail.
func Has(rep *review.Replay, event, detail string) bool {
	return Count(rep, event, detail) > 0
}

// Count counts the rows of event whose detail contains detail.
func Count(rep *review.Replay, event, detail string) int {
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

// StormWrites counts the status writes of the storm's request.
func StormWrites(rep *review.Replay) int {
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

// Scenario is a recording of the four stories reviews are tested on, one
// after the other: a new incident that repeats once, a flap, a storm of
// twelve pods (ten stay individual, the eleventh opens the storm, the
// twelfth joins it), a rejected alert and an ignored Normal event.
type Scenario struct {
	*Recording
}

// Record runs the scenario's stories on r and waits until every decision
// and write of them is recorded.
func (s *Scenario) Record() {
	t := s.t
	at := func(m int) time.Time { return Start.Add(time.Duration(m) * time.Minute) }
	fired := Start.Add(-10 * time.Minute)

	// A new incident, repeated once a minute later.
	require.Equal(t, http.StatusAccepted, s.Post(at(0), Alert{Name: "KubePodCrashLooping", Pod: "api-0", Status: "firing", StartsAt: fired}))
	s.Until("the crash loop's request", func(r *review.Replay) bool {
		return Has(r, review.EventCreated, "KubePodCrashLooping") || Count(r, review.EventCreated, "") == 1
	})
	require.Equal(t, http.StatusAccepted, s.Post(at(1), Alert{Name: "KubePodCrashLooping", Pod: "api-0", Status: "firing", StartsAt: fired.Add(time.Minute)}))
	s.Until("the repeat's write", func(r *review.Replay) bool { return Count(r, review.EventUpdated, "") == 1 })

	// A flap: firing, resolved, firing again within the reopen window.
	flapStart := at(2).Add(-time.Minute)
	require.Equal(t, http.StatusAccepted, s.Post(at(2), Alert{Name: "KubeDeploymentReplicasMismatch", Pod: "web-0", Status: "firing", StartsAt: flapStart}))
	s.Until("the flapping request", func(r *review.Replay) bool { return Count(r, review.EventCreated, "") == 2 })
	require.Equal(t, http.StatusAccepted, s.Post(at(3), Alert{Name: "KubeDeploymentReplicasMismatch", Pod: "web-0", Status: "resolved", StartsAt: flapStart, EndsAt: at(3)}))
	s.Until("the resolve's write", func(r *review.Replay) bool {
		return Has(r, review.EventResolved, "") && Count(r, review.EventUpdated, "") == 2
	})
	require.Equal(t, http.StatusAccepted, s.Post(at(4), Alert{Name: "KubeDeploymentReplicasMismatch", Pod: "web-0", Status: "firing", StartsAt: at(4)}))
	s.Until("the reopen's write", func(r *review.Replay) bool {
		return Has(r, review.EventReopened, "") && Count(r, review.EventUpdated, "") == 3
	})

	// A storm: twelve pods of one alertname and namespace, one every
	// second; the default rate threshold is 10.
	for i := range 12 {
		when := at(5).Add(time.Duration(i) * time.Second)
		require.Equal(t, http.StatusAccepted, s.Post(when, Alert{Name: "KubePodNotReady", Pod: fmt.Sprintf("worker-%02d", i), Status: "firing", StartsAt: when, Severity: "warning"}))
		n := i + 1
		s.Routed(fmt.Sprintf("storm pod %d routed", n), func(r *review.Replay) bool {
			return Count(r, review.EventIndividual, "")+Count(r, review.EventMember, "") == 2+n
		})
	}
	// Every request written, then the storm closes after a minute without
	// a new member.
	s.Until("the storm's writes", func(r *review.Replay) bool {
		return Count(r, review.EventCreated, "") == 13 && StormWrites(r) == 1
	})
	s.At(at(8))
	s.Until("the storm's close and its write", func(r *review.Replay) bool { return Has(r, review.EventStormClose, "") && StormWrites(r) == 2 })

	// A rejected alert beside a valid one.
	require.Equal(t, http.StatusAccepted, s.Post(at(9),
		Alert{Name: "KubeJobFailed", Pod: "batch-0", Status: "pending", StartsAt: at(9)},
		Alert{Name: "KubeJobFailed", Pod: "batch-1", Status: "firing", StartsAt: at(9)}))
	s.Until("the rejection and the valid alert's request", func(r *review.Replay) bool {
		return Has(r, review.EventRejected, "") && Has(r, review.EventCreated, "")
	})
	s.Until("every write", func(r *review.Replay) bool {
		for _, tl := range r.Timelines {
			if tl.Name == "KubeJobFailed" && tl.Request != "" {
				return true
			}
		}
		return false
	})

	// A Normal event: taken, never a signal, recorded as ignored.
	require.Equal(t, http.StatusAccepted, s.PostJSON(at(10), receiver.PathKubernetesEvent, map[string]any{
		"apiVersion": "v1", "kind": "Event", "type": "Normal", "reason": "Pulled", "message": "Successfully pulled image",
		"metadata":       map[string]any{"name": "web-0.pulled", "namespace": s.NS, "uid": "u-pulled"},
		"involvedObject": map[string]any{"kind": "Pod", "namespace": "shop", "name": "web-0"},
		"count":          1, "lastTimestamp": at(10),
	}))
	s.Until("the ignored event's record", func(r *review.Replay) bool { return Has(r, review.EventIgnored, "") })
}
