package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

const token = "e2e-token-0123456789abcdef"

// intake is the real receiver stage, built in-process by app as
// cmd/receiver builds it, publishing to an in-process JetStream.
type intake struct {
	cfg config.Config
	// URL is the receiver's base URL.
	URL  string
	conn *bus.Conn
}

func startReceiver(t testing.TB) *intake {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := config.Default()
	cfg.Bus.URL = n.URL
	cfg.Bus.Prefix = "e2e"
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	require.NoError(t, cfg.Validate())
	log := slog.New(slog.DiscardHandler)

	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log, app.Receiver, app.Options{})
	require.NoError(t, err, "starting the receiver's process")
	r, err := a.Receiver()
	require.NoError(t, err, "building the receiver")
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, r) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done, "receiver run")
		a.Close()
	})

	conn, err := bus.Connect(cfg.Bus, "e2e-test", log)
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	return &intake{cfg: cfg, URL: "http://" + r.Addr(), conn: conn}
}

// webhookURL is where Alertmanager posts.
func (in *intake) webhookURL() string { return in.URL + receiver.PathAlertmanager }

// signals collects every signal stored on <prefix>.signals.alertmanager,
// from the stream's start, with an ordered consumer.
type signals struct {
	mu   sync.Mutex
	msgs []signal.Signal
}

func (in *intake) watchSignals(t testing.TB) *signals {
	t.Helper()
	subject := bus.NewSubjects(in.cfg.Bus.Prefix).Signals(signal.SourceAlertmanager)
	stream := bus.NewSubjects(in.cfg.Bus.Prefix).StreamName(bus.StreamSignals)
	ctx := context.Background()
	cons, err := in.conn.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err, "consuming %s", subject)
	s := &signals{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var sig signal.Signal
		if err := signal.Decode(m.Data(), &sig); err != nil {
			t.Errorf("undecodable signal on %s: %v", m.Subject(), err)
			return
		}
		// The headers carry what later stages route on without decoding.
		if m.Headers().Get(bus.HeaderFingerprint) != sig.Fingerprint || m.Headers().Get(jetstream.MsgIDHeader) != sig.ID {
			t.Errorf("signal %s: headers %v do not match its fingerprint and id", sig.ID, m.Headers())
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, sig)
		s.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	return s
}

// byStatus returns the signals of status st by fingerprint; a fingerprint
// seen twice counts as an error.
func (s *signals) byStatus(st signal.Status) (map[string]signal.Signal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]signal.Signal{}
	var errs []error
	for _, sig := range s.msgs {
		if sig.Status != st {
			continue
		}
		if _, dup := out[sig.Fingerprint]; dup {
			errs = append(errs, fmt.Errorf("%s signal for %s stored twice", st, sig.Fingerprint))
		}
		out[sig.Fingerprint] = sig
	}
	return out, errors.Join(errs...)
}

func (s *signals) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// crashLooping returns n alerts, one a pod, as Prometheus would post them.
func crashLooping(n int, startsAt time.Time) []testenv.Alert {
	alerts := make([]testenv.Alert, n)
	for i := range alerts {
		pod := fmt.Sprintf("api-%02d", i)
		alerts[i] = testenv.Alert{
			Labels: map[string]string{
				"alertname": "KubePodCrashLooping",
				"cluster":   "prod-eu-1",
				"namespace": "payments",
				"pod":       pod,
				"container": "app",
				"severity":  "critical",
			},
			Annotations: map[string]string{
				"summary":     "Pod is crash looping.",
				"description": "Pod payments/" + pod + " (app) is in waiting state.",
			},
			StartsAt:     startsAt,
			GeneratorURL: "http://prometheus:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
		}
	}
	return alerts
}

// expectedFingerprints computes DESIGN §2's fingerprint of each alert from
// its labels: cluster, name, namespace and the pod as target.
func expectedFingerprints(t testing.TB, cfg config.Config, alerts []testenv.Alert) map[string]testenv.Alert {
	t.Helper()
	fp := signal.MustFingerprinter(cfg.Fingerprint.Labels)
	out := map[string]testenv.Alert{}
	for _, a := range alerts {
		ns, pod := a.Labels["namespace"], a.Labels["pod"]
		out[fp.Fingerprint(&signal.Signal{
			Name: a.Labels["alertname"], Namespace: ns, Labels: a.Labels,
			Target: signal.Target{Kind: "Pod", Name: pod, Namespace: ns},
		})] = a
	}
	require.Len(t, out, len(alerts), "every alert has a fingerprint of its own")
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestAlertmanager_toReceiver: the real Alertmanager, configured with a
// webhook receiver and a bearer token, delivers 20 alerts to the receiver;
// each becomes one firing signal with the right fingerprint, and resolving
// them yields one resolved signal each.
func TestAlertmanager_toReceiver(t *testing.T) {
	in := startReceiver(t)
	got := in.watchSignals(t)
	am := testenv.StartAlertmanager(t, in.webhookURL(), token)

	// t=0: Prometheus posts 20 firing alerts.
	start := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	alerts := crashLooping(20, start)
	want := expectedFingerprints(t, in.cfg, alerts)
	am.PostAlerts(t, alerts)

	// Within 10s (group_wait is 1s): 20 firing signals, one a fingerprint.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		firing, err := got.byStatus(signal.StatusFiring)
		assert.NoError(c, err)
		assert.ElementsMatch(c, keys(want), keys(firing))
	}, 10*time.Second, 50*time.Millisecond, "20 firing signals on %s.signals.alertmanager", in.cfg.Bus.Prefix)

	firing, _ := got.byStatus(signal.StatusFiring)
	amFPs := map[string]bool{}
	for fp, sig := range firing {
		a := want[fp]
		assert.Equal(t, signal.SourceAlertmanager, sig.Source)
		assert.Equal(t, "KubePodCrashLooping", sig.Name)
		assert.Equal(t, signal.SeverityCritical, sig.Severity)
		assert.Equal(t, "payments", sig.Namespace)
		assert.Equal(t, signal.Target{Kind: "Pod", Name: a.Labels["pod"], Namespace: "payments"}, sig.Target)
		assert.Equal(t, a.Labels, sig.Labels)
		assert.Equal(t, a.Annotations, sig.Annotations)
		assert.True(t, start.Equal(sig.StartsAt), "startsAt %s, want %s", sig.StartsAt, start)
		assert.Equal(t, a.GeneratorURL, sig.GeneratorURL)
		// Alertmanager's own delivery context survives decoding.
		assert.NotEmpty(t, sig.GroupKey)
		assert.Equal(t, am.URL, sig.AlertmanagerExternal)
		assert.NotEmpty(t, sig.AlertmanagerFP)
		amFPs[sig.AlertmanagerFP] = true
	}
	assert.Len(t, amFPs, 20, "Alertmanager fingerprints are distinct")

	// t≈2s: the rule stops firing; Prometheus posts them with endsAt in
	// the past. Within 10s: one resolved signal each, same fingerprints.
	am.Resolve(t, alerts, time.Now().Add(-time.Second))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resolved, err := got.byStatus(signal.StatusResolved)
		assert.NoError(c, err)
		assert.ElementsMatch(c, keys(want), keys(resolved))
	}, 10*time.Second, 50*time.Millisecond, "20 resolved signals")

	resolved, _ := got.byStatus(signal.StatusResolved)
	for _, sig := range resolved {
		assert.False(t, sig.EndsAt.IsZero(), "a resolved signal carries endsAt")
		assert.True(t, sig.EndsAt.Before(time.Now()), "endsAt %s is in the past", sig.EndsAt)
	}
	assert.Equal(t, 40, got.count(), "nothing else was stored: no repeats, no duplicates")
	assert.Equal(t, 0.0, am.Metric(t, "alertmanager_notifications_failed_total", map[string]string{"integration": "webhook"}))
	assert.Equal(t, 0.0, testenv.MetricValue(t, in.URL+"/metrics", "stormweir_receiver_requests_total", map[string]string{"code": "401"}))
}

// TestAlertmanager_wrongTokenIsRefused: an Alertmanager configured with a
// token the receiver does not know is answered 401, Alertmanager counts the
// notification as failed, and nothing reaches the bus.
func TestAlertmanager_wrongTokenIsRefused(t *testing.T) {
	in := startReceiver(t)
	got := in.watchSignals(t)
	am := testenv.StartAlertmanager(t, in.webhookURL(), "wrong-token-0123456789abcdef")

	am.PostAlerts(t, crashLooping(3, time.Now().Add(-time.Minute).UTC()))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.GreaterOrEqual(c, testenv.MetricValue(t, in.URL+"/metrics", "stormweir_receiver_requests_total",
			map[string]string{"endpoint": "alertmanager", "code": fmt.Sprint(http.StatusUnauthorized)}), 1.0,
			"the receiver answered 401")
		assert.GreaterOrEqual(c, am.Metric(t, "alertmanager_notifications_failed_total",
			map[string]string{"integration": "webhook"}), 1.0, "alertmanager counted the failed notification")
	}, 10*time.Second, 100*time.Millisecond)

	assert.Equal(t, 0.0, testenv.MetricValue(t, in.URL+"/metrics", "stormweir_receiver_requests_total",
		map[string]string{"code": fmt.Sprint(http.StatusAccepted)}))
	assert.Equal(t, 0, got.count(), "nothing was stored")
}
