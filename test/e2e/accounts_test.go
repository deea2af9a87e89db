package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/pkg/writer"
	"github.com/stormweir/stormweir/test/testenv"
)

// accountUsers are the users of deploy/nats/accounts.conf.
var accountUsers = []string{"receiver", "deduper", "aggregator", "writer", "admin"}

// securedBus is nats-server running deploy/nats/nats-server.conf exactly
// as shipped (and so accounts.conf), with the users' passwords in its
// environment and in files, as a Secret provides them.
type securedBus struct {
	nats *testenv.NATS
	// passwordFiles by user.
	passwordFiles map[string]string
	subj          bus.Subjects
}

func startSecuredBus(t *testing.T) *securedBus {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	s := &securedBus{passwordFiles: map[string]string{}, subj: bus.NewSubjects(config.DefaultBus().Prefix)}
	dir := t.TempDir()
	for _, u := range accountUsers {
		pw := u + "-pw-" + testenv.RandomID()
		t.Setenv("STORMWEIR_"+strings.ToUpper(u)+"_PASSWORD", pw)
		s.passwordFiles[u] = filepath.Join(dir, u)
		require.NoError(t, os.WriteFile(s.passwordFiles[u], []byte(pw+"\n"), 0o600))
	}
	opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy", "nats", "nats-server.conf"))
	require.NoError(t, err, "parsing the shipped nats-server configuration")
	s.nats = testenv.StartNATSWith(t, opts)
	return s
}

// config is the configuration of a process connecting as user; only the
// writer manages the streams, as accounts.conf expects.
func (s *securedBus) config(user string) config.Config {
	cfg := config.Default()
	cfg.Bus.URL = s.nats.URL
	cfg.Bus.Auth = config.BusAuth{User: user, PasswordFile: s.passwordFiles[user]}
	cfg.Bus.ManageStreams = user == "writer"
	cfg.Bus.PublishTimeout = 2 * time.Second
	cfg.Bus.Consumer.RetryDelays = []time.Duration{100 * time.Millisecond}
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	cfg.Worker.DrainTimeout = 2 * time.Second
	return cfg
}

// connect connects as user (named like that user's stage, so its inboxes
// are the ones the account grants), closed at cleanup.
func (s *securedBus) connect(t testing.TB, user string) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(s.config(user).Bus, "stormweir-"+user, slog.New(slog.DiscardHandler))
	require.NoError(t, err, "connecting as %s", user)
	t.Cleanup(c.Close)
	return c
}

// count returns how many messages stream kind holds on subject.
func (s *securedBus) count(t testing.TB, admin *bus.Conn, kind, subject string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := admin.JS.Stream(ctx, s.subj.StreamName(kind))
	require.NoError(t, err)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

// recorder keeps the log records at warning and above.
type recorder struct {
	mu      sync.Mutex
	records []string
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	r.mu.Lock()
	r.records = append(r.records, b.String())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) matching(word string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.records {
		if strings.Contains(s, word) {
			out = append(out, s)
		}
	}
	return out
}

// TestAccounts_eachStageWorksWithItsOwnUser runs the receiver, deduper and
// aggregator stages and the writer's consumer loop, each on a process of
// its own connected as its own user of the shipped account: an alert
// posted at t=0 reaches the writer's consumer as incidents.open, a poison
// message at each stage's input lands in that stage's DLQ, and no
// operation of any stage is refused.
func TestAccounts_eachStageWorksWithItsOwnUser(t *testing.T) {
	s := startSecuredBus(t)
	rec := &recorder{}
	log := slog.New(rec)
	ctx, cancel := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	t.Cleanup(func() { cancel(); runs.Wait() })
	run := func(name string, r service.Runner) {
		runs.Add(1)
		go func() {
			defer runs.Done()
			assert.NoError(t, r.Run(ctx), "%s run", name)
		}()
	}
	// Each stage on a process of its own connecting as its own user, built
	// as its binary builds it; the deduper and aggregator share in-memory
	// stores, as their replicas share Redis.
	stores := app.Options{Incidents: record.NewMemoryStore(config.DefaultDedup(), clock.Real{}), Storms: storm.NewMemoryStore(0)}
	process := func(user string) *app.App {
		a, err := app.New(ctx, s.config(user), log, user, stores)
		require.NoError(t, err, "starting the %s's process as user %s", user, user)
		t.Cleanup(a.Close)
		return a
	}

	// The receiver starts first and waits: only the writer may create
	// the streams.
	rcvProc := make(chan *app.App, 1)
	go func() {
		a, err := app.New(ctx, s.config("receiver"), log, "receiver", stores)
		assert.NoError(t, err, "starting the receiver's process")
		rcvProc <- a
	}()
	wrt := process("writer").Process
	pr := <-rcvProc
	require.NotNil(t, pr)
	t.Cleanup(pr.Close)

	// The writer's bus side: its durable consumer and worker loop, with a
	// handler that keeps what arrives, refuses the poison and holds a
	// "hold" message until released.
	got := make(chan *bus.Msg, 16)
	release := make(chan struct{})
	w, err := wrt.Worker(ctx, service.WorkerSpec{
		Consumer: bus.ConsumerSpec{Stage: writer.Stage, Stream: bus.StreamIncidents, Subjects: []string{s.subj.AllIncidents()}},
		Handler: bus.HandlerFunc(func(hctx context.Context, m *bus.Msg) ([]bus.Output, error) {
			if bytes.Equal(m.Data, []byte("poison")) {
				return nil, bus.Permanent(errors.New("poison"))
			}
			if bytes.Equal(m.Data, []byte("hold")) {
				select {
				case <-release:
					return nil, nil
				case <-hctx.Done():
					return nil, hctx.Err()
				}
			}
			got <- m
			return nil, nil
		}),
	})
	require.NoError(t, err, "creating the writer's consumer as the writer")
	run("writer", w)

	pd := process("deduper")
	dd, err := pd.Deduper(ctx)
	require.NoError(t, err, "creating the deduper's consumer as the deduper")
	run("deduper", dd)
	pa := process("aggregator")
	agg, err := pa.Aggregator(ctx)
	require.NoError(t, err, "creating the aggregator's consumer as the aggregator")
	run("aggregator", agg)
	r, err := pr.Receiver()
	require.NoError(t, err)
	run("receiver", r)

	// t=0: one alert through the receiver's HTTP intake.
	alert := loadgen.PodAlert("KubePodCrashLooping", "payments", "api-0", time.Now())
	req, err := http.NewRequest(http.MethodPost, "http://"+r.Addr()+receiver.PathAlertmanager, bytes.NewReader(loadgen.NewWebhook(alert).JSON()))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "the receiver stored the signal")
	select {
	case m := <-got:
		assert.Equal(t, s.subj.IncidentsOpen(), m.Subject, "the aggregator opened the incident for the writer")
	case <-time.After(15 * time.Second):
		t.Fatalf("no incident reached the writer within 15s; warnings: %v", rec.matching(""))
	}

	// A poison message at each stage's input, published by the stage
	// allowed to publish there, ends in that stage's own DLQ.
	poison := func(p *service.Process, subject string) {
		_, err := p.Publisher().Publish(ctx, bus.Output{Subject: subject, Data: []byte("poison"), MsgID: "poison:" + subject})
		require.NoError(t, err, "publishing poison to %s", subject)
	}
	poison(pr.Process, s.subj.Signals("alertmanager"))
	poison(pd.Process, s.subj.DedupNew())
	poison(pd.Process, s.subj.IncidentsUpdate())
	admin := s.connect(t, "admin")
	for _, stage := range []string{dedup.StageName, storm.StageName, writer.Stage} {
		require.Eventually(t, func() bool { return s.count(t, admin, bus.StreamDLQ, s.subj.DLQ(stage)) == 1 }, 15*time.Second, 20*time.Millisecond,
			"the %s dead-lettered its poison", stage)
	}

	// Each worker stage reads its own gauges with its own user: its DLQ
	// depth (DLQ stream info), and, while the writer holds a message, the
	// writer's oldest unprocessed age (a message read from its stream).
	procs := map[string]*service.Process{dedup.StageName: pd.Process, storm.StageName: pa.Process, writer.Stage: wrt}
	for stage, p := range procs {
		require.Eventually(t, func() bool { return gauge(t, p.Metrics.DLQMessages, stage) == 1 }, 15*time.Second, 50*time.Millisecond,
			"the %s's DLQ depth gauge", stage)
	}
	_, err = pa.Process.Publisher().Publish(ctx, bus.Output{Subject: s.subj.IncidentsOpen(), Data: []byte("hold"), MsgID: "hold"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return gauge(t, wrt.Metrics.OldestUnprocessedAge, writer.Stage) > 0 }, 15*time.Second, 50*time.Millisecond,
		"the writer's oldest unprocessed age while it holds a message")
	close(release)

	// Every process's readiness probe (JetStream account info) answers,
	// and after a round trip on each connection no refusal is pending.
	for user, p := range map[string]*service.Process{"receiver": pr.Process, "deduper": pd.Process, "aggregator": pa.Process, "writer": wrt} {
		assert.NoError(t, p.Bus.Check(ctx), "%s readiness", user)
		require.NoError(t, p.Bus.NC.Flush())
		assert.NoError(t, p.Bus.NC.LastError(), "%s: nothing refused", user)
	}
	assert.Empty(t, rec.matching("refused"), "no operation was refused")
}

// gauge reads one stage's value of a gauge vector.
func gauge(t testing.TB, g *prometheus.GaugeVec, stage string) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, g.WithLabelValues(stage).Write(&m))
	return m.GetGauge().GetValue()
}

// TestAccounts_refusesWhatAStageMayNot checks each rule of the account
// the other way round: a stage's user trying another stage's part is
// refused by the server, and the attempt has no effect.
func TestAccounts_refusesWhatAStageMayNot(t *testing.T) {
	s := startSecuredBus(t)
	ctx := context.Background()
	wrt := s.connect(t, "writer")
	require.NoError(t, bus.EnsureStreams(ctx, wrt.JS, s.config("writer").Bus), "the writer creates the streams")
	_, err := bus.EnsureConsumer(ctx, wrt.JS, s.config("writer").Bus, bus.ConsumerSpec{
		Stage: writer.Stage, Stream: bus.StreamIncidents, Subjects: []string{s.subj.AllIncidents()},
	})
	require.NoError(t, err)
	admin := s.connect(t, "admin")

	// refused asserts that the server refused subject to c: after a round
	// trip every refusal sent before it has been read.
	refused := func(t *testing.T, c *bus.Conn, what, subject string) {
		t.Helper()
		require.NoError(t, c.NC.Flush())
		err := c.NC.LastError()
		require.ErrorIs(t, err, nats.ErrPermissionViolation)
		assert.Contains(t, err.Error(), fmt.Sprintf("Permissions Violation for %s to %q", what, subject))
	}
	// jsCall runs a JetStream API call that is refused, so it can only time
	// out; its error is not what the test is about.
	jsCall := func(call func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		assert.Error(t, call(ctx))
	}

	forged := []struct {
		user, subject, stream string
	}{
		{"deduper", s.subj.IncidentsOpen(), bus.StreamIncidents},
		{"deduper", s.subj.IncidentsStorm(), bus.StreamIncidents},
		{"receiver", s.subj.IncidentsOpen(), bus.StreamIncidents},
		{"receiver", s.subj.DedupNew(), bus.StreamIncidents},
		{"aggregator", s.subj.Signals("alertmanager"), bus.StreamSignals},
		{"aggregator", s.subj.DedupNew(), bus.StreamIncidents},
		{"writer", s.subj.IncidentsOpen(), bus.StreamIncidents},
		{"deduper", s.subj.DLQ(writer.Stage), bus.StreamDLQ},
	}
	for _, f := range forged {
		t.Run(fmt.Sprintf("the %s cannot publish to %s", f.user, f.subject), func(t *testing.T) {
			c := s.connect(t, f.user)
			before := s.count(t, admin, f.stream, f.subject)
			require.NoError(t, c.NC.Publish(f.subject, []byte(`{"forged":true}`)))
			refused(t, c, "Publish", f.subject)
			assert.Equal(t, before, s.count(t, admin, f.stream, f.subject), "nothing was stored on %s", f.subject)
		})
	}

	t.Run("the receiver cannot create the writer's consumer", func(t *testing.T) {
		require.NoError(t, admin.JS.DeleteConsumer(ctx, s.subj.StreamName(bus.StreamIncidents), writer.Stage))
		c := s.connect(t, "receiver")
		jsCall(func(ctx context.Context) error {
			_, err := bus.EnsureConsumer(ctx, c.JS, s.config("receiver").Bus, bus.ConsumerSpec{
				Stage: writer.Stage, Stream: bus.StreamIncidents, Subjects: []string{s.subj.AllIncidents()},
			})
			return err
		})
		refused(t, c, "Publish", "$JS.API.CONSUMER.CREATE.STORMWEIR_INCIDENTS.writer")
		_, err := admin.JS.Consumer(ctx, s.subj.StreamName(bus.StreamIncidents), writer.Stage)
		assert.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
		_, err = bus.EnsureConsumer(ctx, wrt.JS, s.config("writer").Bus, bus.ConsumerSpec{
			Stage: writer.Stage, Stream: bus.StreamIncidents, Subjects: []string{s.subj.AllIncidents()},
		})
		require.NoError(t, err, "the writer can")
	})
	t.Run("the deduper cannot read incidents", func(t *testing.T) {
		c := s.connect(t, "deduper")
		jsCall(func(ctx context.Context) error {
			_, err := c.JS.CreateOrUpdateConsumer(ctx, s.subj.StreamName(bus.StreamIncidents), jetstream.ConsumerConfig{Durable: dedup.StageName})
			return err
		})
		refused(t, c, "Publish", "$JS.API.CONSUMER.CREATE.STORMWEIR_INCIDENTS.deduper")
		_, err := admin.JS.Consumer(ctx, s.subj.StreamName(bus.StreamIncidents), dedup.StageName)
		assert.ErrorIs(t, err, jetstream.ErrConsumerNotFound)
	})
	t.Run("the aggregator cannot pull the writer's messages", func(t *testing.T) {
		c := s.connect(t, "aggregator")
		subject := "$JS.API.CONSUMER.MSG.NEXT.STORMWEIR_INCIDENTS.writer"
		require.NoError(t, c.NC.PublishRequest(subject, c.NC.NewInbox(), []byte(`{"batch":10,"expires":100000000}`)))
		refused(t, c, "Publish", subject)
		info, err := admin.JS.Consumer(ctx, s.subj.StreamName(bus.StreamIncidents), writer.Stage)
		require.NoError(t, err)
		assert.Zero(t, info.CachedInfo().NumWaiting, "no pull request reached the writer's consumer")
	})
	t.Run("the receiver cannot change a stream", func(t *testing.T) {
		// Stream rights would let it copy its own signals into the
		// writer's subjects with a source and a subject transform.
		c := s.connect(t, "receiver")
		sc := bus.StreamConfigs(s.config("receiver").Bus)[1]
		sc.Sources = []*jetstream.StreamSource{{
			Name: s.subj.StreamName(bus.StreamSignals),
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source: s.subj.AllSignals(), Destination: s.subj.IncidentsOpen(),
			}},
		}}
		jsCall(func(ctx context.Context) error { _, err := c.JS.UpdateStream(ctx, sc); return err })
		refused(t, c, "Publish", "$JS.API.STREAM.UPDATE.STORMWEIR_INCIDENTS")
		st, err := admin.JS.Stream(ctx, sc.Name)
		require.NoError(t, err)
		assert.Empty(t, st.CachedInfo().Config.Sources, "the stream is unchanged")
	})
	t.Run("the receiver cannot read incidents or another stage's inbox", func(t *testing.T) {
		for _, subject := range []string{s.subj.AllIncidents(), bus.InboxPrefix("stormweir-writer") + ".>"} {
			c := s.connect(t, "receiver")
			sub, err := c.NC.SubscribeSync(subject)
			require.NoError(t, err)
			refused(t, c, "Subscription", subject)
			// Delivered to a subscriber allowed to see it, never to this one.
			seen, err := admin.NC.SubscribeSync(s.subj.IncidentsStorm())
			require.NoError(t, err)
			require.NoError(t, admin.NC.Flush())
			agg := s.connect(t, "aggregator")
			require.NoError(t, agg.NC.Publish(s.subj.IncidentsStorm(), []byte(`{}`)))
			_, err = seen.NextMsg(5 * time.Second)
			require.NoError(t, err, "the message was delivered")
			_, err = sub.NextMsg(0)
			assert.ErrorIs(t, err, nats.ErrTimeout, "the refused subscription received nothing")
		}
	})
	t.Run("a client without a user cannot connect", func(t *testing.T) {
		_, err := bus.Connect(config.Bus{URL: s.nats.URL, PublishTimeout: time.Second}, "stormweir-anonymous", slog.New(slog.DiscardHandler))
		assert.ErrorIs(t, err, nats.ErrAuthorization)
	})
	t.Run("a stage with another stage's password cannot connect", func(t *testing.T) {
		cfg := s.config("receiver").Bus
		cfg.Auth.PasswordFile = s.passwordFiles["writer"]
		_, err := bus.Connect(cfg, "stormweir-receiver", slog.New(slog.DiscardHandler))
		assert.ErrorIs(t, err, nats.ErrAuthorization)
	})
}
