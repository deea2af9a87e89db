package writer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// One API server for the package: each start costs seconds, so tests
// share it and isolate themselves by namespace.
var (
	testEnv  *envtest.Environment
	testRest *rest.Config
	// admin is a direct client for test set-up and inspection.
	admin client.Client
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: the writer tests need a real kube-apiserver and etcd.\n"+
			"Build them once and point the tests at them:\n\texport KUBEBUILDER_ASSETS=\"$(hack/testbins.sh)\"")
		return 1
	}
	ctrllog.SetLogger(logr.Discard())
	// A fixed certificate directory keeps the serving certificates and port
	// across an API server Stop/Start (the restart test needs that).
	certDir, err := os.MkdirTemp("", "stormweir-apiserver-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(certDir)
	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "deploy", "crd")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
		// kube-apiserver's graceful shutdown outlasts the default 20s wait
		// with watches open; after StopTimeout it is killed, which is the
		// harsher fault anyway.
		ControlPlane: envtest.ControlPlane{APIServer: &envtest.APIServer{CertDir: certDir, StopTimeout: 3 * time.Second}},
	}
	testRest, err = testEnv.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the test control plane (KUBEBUILDER_ASSETS=%s; run hack/testbins.sh): %v\n", os.Getenv("KUBEBUILDER_ASSETS"), err)
		return 1
	}
	defer func() { _ = testEnv.Stop() }()
	testRest.QPS, testRest.Burst = 1000, 2000
	admin, err = client.New(testRest, client.Options{Scheme: Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// harness is one running writer with its own NATS, Redis prefix and
// namespaces, on a fake clock: the writer's spacings, memo and sweeps
// move only when the test moves the clock.
type harness struct {
	t     testing.TB
	cfg   config.Config
	nats  *testenv.NATS
	redis *testenv.Redis
	w     *Writer
	p     *service.Process
	clk   *clock.Fake
	store *record.RedisStore
	pub   *bus.Publisher
	subj  bus.Subjects
	id    string
	// fallback is the test's fallback namespace.
	fallback string
	// sent counts the messages published by the test.
	sent int
	// rest reaches the API server; testRest when nil (set it between
	// prepareWriter and start to put something in between).
	rest *rest.Config
	// stop ends the writer and closes its process.
	stop func()
}

type harnessOption func(*config.Config)

// startWriter runs a writer against the shared API server until the test
// ends.
func startWriter(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	h := prepareWriter(t, opts...)
	h.start()
	return h
}

// prepareWriter sets up what a writer runs against (NATS, Redis, its
// configuration, the fallback namespace, the clock) without starting it.
func prepareWriter(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	nt := testenv.StartNATS(t)
	rd := testenv.LocalRedis(t)
	id := testenv.RandomID()[:8]
	// The fake time starts at the wall time, so receipt → write latencies
	// stay plausible.
	h := &harness{t: t, id: id, fallback: "fb-" + id, clk: clock.NewFake(time.Now().UTC()), nats: nt, redis: rd}
	h.namespace(h.fallback, nil)

	cfg := config.Default()
	cfg.Bus.URL = nt.URL
	// With a server-side BackOff, nats-server measures a NakWithDelay
	// from AckWait but expires it by the BackOff step of the delivery, so
	// from the second delivery on a retry waits about BackOff[n]-AckWait
	// longer than asked (30s with the defaults). Without BackOff the
	// requested delays hold, which the restart test relies on.
	cfg.Bus.Consumer.BackOff = nil
	cfg.Bus.Consumer.RetryDelays = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond}
	cfg.Worker.DrainTimeout = 5 * time.Second
	cfg.Writer.FallbackNamespace = h.fallback
	cfg.Writer.QPS, cfg.Writer.Burst = 1000, 2000
	for _, o := range opts {
		o(&cfg)
	}
	require.NoError(t, cfg.Validate())
	h.cfg = cfg
	return h
}

// start runs the writer until stop or the test's end, and waits until it
// is ready.
func (h *harness) start() {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := service.NewProcess(ctx, h.cfg, log, "writer-test")
	require.NoError(t, err)
	h.p = p
	h.store = record.NewRedisStore(h.redis.Client, h.redis.Prefix, h.cfg.Dedup, h.clk)
	rc := testRest
	if h.rest != nil {
		rc = h.rest
	}
	h.w, err = New(ctx, Options{Process: p, Records: h.store, RestConfig: rc, Clock: h.clk})
	require.NoError(t, err)
	h.pub = p.Publisher()
	h.subj = bus.NewSubjects(h.cfg.Bus.Prefix)

	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("writer stopped with: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("writer did not stop within 30s")
			}
			p.Close()
		})
	}
	t.Cleanup(h.stop)
	require.Eventually(t, func() bool { return h.p.Health.Ready(ctx) == nil }, 30*time.Second, 20*time.Millisecond, "writer not ready")
	bctx, cancelWait := context.WithTimeout(ctx, 10*time.Second)
	defer cancelWait()
	require.NoError(t, h.clk.BlockUntil(bctx, 1), "the coalescer's timer")
}

// namespace creates a namespace with labels and deletes it at cleanup.
func (h *harness) namespace(name string, labels map[string]string) string {
	h.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	require.NoError(h.t, admin.Create(context.Background(), ns), "creating namespace %s", name)
	h.t.Cleanup(func() { _ = admin.Delete(context.Background(), ns) })
	return name
}

// publish puts v on subject, as the aggregator or deduper would.
func (h *harness) publish(subject string, v any, msgID string) {
	h.t.Helper()
	data, err := json.Marshal(v)
	require.NoError(h.t, err)
	hdr := nats.Header{}
	hdr.Set(bus.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	_, err = h.pub.Publish(context.Background(), bus.Output{Subject: subject, Data: data, MsgID: msgID, Header: hdr})
	require.NoError(h.t, err, "publishing to %s", subject)
	h.sent++
}

func (h *harness) open(e incident.Event) {
	h.publish(h.subj.IncidentsOpen(), e, e.IncidentID+":"+strconv.FormatInt(e.Revision, 10))
}

func (h *harness) update(e incident.Event) {
	h.publish(h.subj.IncidentsUpdate(), e, e.IncidentID+":"+strconv.FormatInt(e.Revision, 10))
}

// newIndividual makes sig a new incident routed individually, as the
// deduper and the aggregator would on the real store, and returns its
// event.
func (h *harness) newIndividual(sig *signal.Signal, msgID string) incident.Event {
	h.t.Helper()
	ctx := context.Background()
	head := sig.Head()
	res, err := h.store.Decide(ctx, &head, msgID)
	require.NoError(h.t, err)
	require.Equal(h.t, incident.DecisionNew, res.Decision)
	rec, err := h.store.SetRoute(ctx, sig.Fingerprint, res.Record.IncidentID, incident.RouteIndividual)
	require.NoError(h.t, err)
	e := incident.Event{Decision: incident.DecisionNew, Signal: encoded(sig)}
	record.Refresh(&e, &rec)
	return e
}

// acked is how many messages the writer has acked so far.
func (h *harness) acked() float64 {
	return counterValue(h.p.Metrics.Messages.WithLabelValues(Stage, bus.ResultAck))
}

func (h *harness) result(r string) float64 {
	return counterValue(h.p.Metrics.Messages.WithLabelValues(Stage, r))
}

// writes counts the writer's mutating requests to the API server.
func (h *harness) writes() float64 {
	var n float64
	for _, m := range []string{"POST", "PATCH", "PUT", "DELETE"} {
		for _, code := range []string{"200", "201", "409", "422", "403", "404", "500", "503", "429", "error"} {
			n += counterValue(h.w.m.api.WithLabelValues(m, code))
		}
	}
	return n
}

// waitAcked waits until the writer acked n messages in total. It does
// not move the clock: an update waiting for its request's spacing stays
// unacked.
func (h *harness) waitAcked(n int, timeout time.Duration) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.acked() >= float64(n) }, timeout, 10*time.Millisecond,
		"writer acked %v of %d messages", h.acked(), n)
}

// waitWritten waits until the writer acked n messages in total, moving
// the fake clock to the due time of each write that waits for its
// request's spacing (whenever no write is in progress). For tests that
// do not count writes per spacing.
func (h *harness) waitWritten(n int, timeout time.Duration) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		if h.acked() >= float64(n) {
			return true
		}
		if st := h.coState(); st.pending > 0 && !st.flushing && st.next.After(h.clk.Now()) {
			h.clk.Set(st.next)
		}
		return false
	}, timeout, 10*time.Millisecond, "writer acked %v of %d messages", h.acked(), n)
}

// coalescerState is what the coalescer holds at one instant.
type coalescerState struct {
	// pending counts updates waiting for their request's spacing.
	pending  int
	flushing bool
	// next is the soonest due write (zero when none waits).
	next time.Time
}

func (h *harness) coState() coalescerState {
	co := h.w.co
	co.mu.Lock()
	defer co.mu.Unlock()
	var st coalescerState
	for _, e := range co.entries {
		st.pending += len(e.pending)
		st.flushing = st.flushing || e.flushing
	}
	if len(co.due) > 0 {
		st.next = co.due[0].due
	}
	return st
}

// settle waits until every message the test sent is either acked or an
// update waiting in the coalescer for its request's spacing, and no
// write is in progress: nothing more happens until the clock moves. Its
// timer is armed for the waiting updates by then (the coalescer arms it
// before the update waits).
func (h *harness) settle() coalescerState {
	h.t.Helper()
	var st coalescerState
	require.Eventually(h.t, func() bool {
		st = h.coState()
		return !st.flushing && int(h.acked())+st.pending == h.sent
	}, 30*time.Second, time.Millisecond, "writer did not settle: %d sent, %v acked, state %+v", h.sent, h.acked(), st)
	return st
}

// advance moves the fake clock by d; see advanceTo.
func (h *harness) advance(d time.Duration) coalescerState {
	h.t.Helper()
	return h.advanceTo(h.clk.Now().Add(d))
}

// advanceTo sets the fake clock to at, then waits until the coalescer
// has handled what came due (its timer is armed again once it has
// started the due writes) and the writes are done.
func (h *harness) advanceTo(at time.Time) coalescerState {
	h.t.Helper()
	h.clk.Set(at)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(h.t, h.clk.BlockUntil(ctx, 1), "the coalescer re-arms its timer")
	return h.settle()
}

// get reads the request of incident id in ns from the API server.
func get(t testing.TB, ns, id string) *v1alpha1.RemediationRequest {
	t.Helper()
	var rr v1alpha1.RemediationRequest
	require.NoError(t, admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: RequestName(id)}, &rr))
	return &rr
}

// list returns the requests in ns.
func list(t testing.TB, ns string) []v1alpha1.RemediationRequest {
	t.Helper()
	var l v1alpha1.RemediationRequestList
	require.NoError(t, admin.List(context.Background(), &l, client.InNamespace(ns)))
	return l.Items
}

// fingerprintOf derives a distinct 64-hex fingerprint for a test key.
func fingerprintOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// event is an incident event of a firing signal in ns.
func event(fp, id string, rev, count int64, ns string, sev signal.Severity) incident.Event {
	now := time.Now().UTC()
	return incident.Event{
		Decision: incident.DecisionNew, IncidentID: id, Fingerprint: fp, Revision: rev,
		State: incident.StateFiring, Count: count, FirstSeen: now, LastSeen: now,
		Route:  incident.RouteIndividual,
		Signal: encoded(testSignal(fp, id+"-sig", ns, sev)),
	}
}

// testSignal is a firing signal of fingerprint fp in ns.
func testSignal(fp, id, ns string, sev signal.Severity) *signal.Signal {
	now := time.Now().UTC()
	return &signal.Signal{
		ID: id, Fingerprint: fp, Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
		Status: signal.StatusFiring, Severity: sev, Namespace: ns,
		Target:      signal.Target{Kind: "Pod", Name: "api-0", Namespace: ns},
		Labels:      map[string]string{"alertname": "KubePodCrashLooping", "namespace": ns, "pod": "api-0", "severity": string(sev)},
		Annotations: map[string]string{"summary": "pod api-0 is crash looping"},
		StartsAt:    now.Add(-time.Minute), ReceivedAt: now,
	}
}

// encoded is s as the receiver publishes it.
func encoded(s *signal.Signal) []byte {
	b, err := signal.Encode(s)
	if err != nil {
		panic(err)
	}
	return b
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
