package eventwatch_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/eventwatch"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// startAPIServer starts a real kube-apiserver and etcd from
// $KUBEBUILDER_ASSETS and stops them at cleanup.
func startAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: this test needs a real kube-apiserver and etcd.\n" +
			"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{ControlPlane: envtest.ControlPlane{APIServer: &envtest.APIServer{StopTimeout: 3 * time.Second}}}
	rc, err := env.Start()
	require.NoError(t, err, "starting the test control plane")
	t.Cleanup(func() { _ = env.Stop() })
	return rc
}

// TestWatcher_publishesWarningEventChanges: a watcher on one namespace and
// one reason publishes each change of a matching Warning event, as the
// receiver would publish the same event posted to it, and nothing for a
// Normal event, another reason or another namespace; stopped, it leaves no
// goroutine behind.
//
//	t=0   BackOff seen 3 times in ns: a signal with count 3.
//	then  an Unhealthy Warning and a Normal event in ns, a BackOff in
//	      another namespace; the BackOff rises to 5: a signal with count
//	      5, and the three others published nothing.
func TestWatcher_publishesWarningEventChanges(t *testing.T) {
	ctx := context.Background()
	rc := startAPIServer(t)
	cs, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	for _, ns := range []string{"shop", "other"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL)
	cfg.Watcher.Namespaces = []string{"shop"}
	cfg.Watcher.Reasons = []string{"BackOff"}
	require.NoError(t, cfg.Validate())

	nc, err := nats.Connect(n.URL)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	ignore := goleak.IgnoreCurrent()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	runCtx, cancel := context.WithCancel(ctx)
	p, err := service.NewProcess(runCtx, cfg, log, "receiver")
	require.NoError(t, err)
	w, err := eventwatch.New(eventwatch.Options{Config: cfg, RestConfig: rc, Publisher: p.Publisher(), Registry: p.Registry, Log: log})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	subj := bus.NewSubjects(cfg.Bus.Prefix)
	stream, err := js.Stream(ctx, subj.StreamName(bus.StreamSignals))
	require.NoError(t, err)
	// signals returns every signal on the bus, in order.
	signals := func(c require.TestingT) []signal.Signal {
		info, err := stream.Info(ctx)
		require.NoError(c, err)
		var out []signal.Signal
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			require.NoError(c, err)
			assert.Equal(c, subj.Signals(signal.SourceKubernetesEvent), m.Subject)
			var s signal.Signal
			require.NoError(c, signal.Decode(m.Data, &s))
			assert.Equal(c, s.ID, m.Header.Get(nats.MsgIdHdr), "the signal's id is its msg-id")
			out = append(out, s)
		}
		return out
	}

	first := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	event := func(ns, name, reason, typ string, count int32) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "api-0", APIVersion: "v1"},
			Reason:         reason, Message: "Back-off restarting failed container", Type: typ,
			Count: count, FirstTimestamp: metav1.NewTime(first), LastTimestamp: metav1.NewTime(first.Add(time.Duration(count) * time.Second)),
			Source: corev1.EventSource{Component: "kubelet", Host: "node-1"},
		}
	}
	backoff, err := cs.CoreV1().Events("shop").Create(ctx, event("shop", "api-0.backoff", "BackOff", corev1.EventTypeWarning, 3), metav1.CreateOptions{})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got := signals(c)
		if assert.Len(c, got, 1) {
			s := got[0]
			assert.EqualValues(c, 3, s.EventCount)
			assert.Equal(c, string(backoff.UID), s.EventUID)
			assert.Equal(c, "BackOff", s.Name)
			assert.Equal(c, signal.Target{Kind: "Pod", Name: "api-0", Namespace: "shop"}, s.Target)
			assert.Equal(c, "Back-off restarting failed container", s.Annotations["message"])
		}
	}, 30*time.Second, 20*time.Millisecond, "the BackOff event seen 3 times")

	for _, e := range []*corev1.Event{
		event("shop", "api-0.unhealthy", "Unhealthy", corev1.EventTypeWarning, 4),
		event("shop", "api-0.pulled", "BackOff", corev1.EventTypeNormal, 1),
		event("other", "api-0.backoff", "BackOff", corev1.EventTypeWarning, 2),
	} {
		_, err := cs.CoreV1().Events(e.Namespace).Create(ctx, e, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	backoff.Count = 5
	backoff.LastTimestamp = metav1.NewTime(first.Add(5 * time.Second))
	_, err = cs.CoreV1().Events("shop").Update(ctx, backoff, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got := signals(c)
		if assert.Len(c, got, 2, "one more signal: the count rise, nothing for the others") {
			assert.EqualValues(c, 5, got[1].EventCount)
			assert.Equal(c, got[0].Fingerprint, got[1].Fingerprint)
		}
	}, 30*time.Second, 20*time.Millisecond, "the BackOff event rose to 5")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher did not stop within 30s")
	}
	p.Close()
	nc.Close()
	n.Stop()
	goleak.VerifyNone(t, ignore)
}
