package dedup_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// pipeline is an in-process JetStream with the pipeline's streams, a
// client to publish signals and read what the deduper published, and the
// configuration deduper stages under test share.
type pipeline struct {
	cfg  config.Config
	subj bus.Subjects
	nats *testenv.NATS
	conn *bus.Conn
	pub  *bus.Publisher
}

func newPipeline(t testing.TB) *pipeline {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL)
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ} {
		s.MaxBytes = 256 << 20
	}
	c := &cfg.Bus.Consumer
	c.MaxDeliver = -1 // fault tests retry for as long as the fault lasts
	c.Concurrency = 25
	c.FetchMaxWait = 500 * time.Millisecond
	require.NoError(t, cfg.Validate())

	conn, err := bus.Connect(cfg.Bus, "dedup-test-client", quietLog())
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, bus.EnsureStreams(ctx, conn.JS, cfg.Bus))
	pub := bus.NewPublisher(conn.JS, 10*time.Second)
	t.Cleanup(pub.Close)
	return &pipeline{cfg: cfg, subj: bus.NewSubjects(cfg.Bus.Prefix), nats: n, conn: conn, pub: pub}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// running is one deduper replica: its own process (registry, health, bus
// connection) and stage, built as cmd/deduper builds them.
type running struct {
	app    *app.App
	stage  *dedup.Stage
	health string
	cancel context.CancelFunc
	done   chan error
}

// start runs a deduper replica on store until stop or test cleanup.
func (p *pipeline) start(t testing.TB, store record.Store) *running {
	t.Helper()
	ctx := context.Background()
	a, err := app.New(ctx, p.cfg, quietLog(), app.Deduper, app.Options{Incidents: store})
	require.NoError(t, err)
	st, err := a.Deduper(ctx)
	require.NoError(t, err)
	addr, err := a.HealthAddr()
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	r := &running{app: a, stage: st, health: addr, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(rctx, st) }()
	t.Cleanup(r.stop)
	return r
}

// stop ends the replica and waits for its drain.
func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
	r.app.Close()
}

// readyz returns the replica's /readyz status code.
func (r *running) readyz(t testing.TB) int {
	t.Helper()
	resp, err := http.Get("http://" + r.health + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// decisions returns the replica's stormweir_dedup_decisions_total{decision}.
func (r *running) decisions(d incident.Decision) int {
	return counterValue(r.stage.Metrics().Decisions.WithLabelValues(string(d)))
}

func counterValue(c prometheus.Counter) int {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}

// fingerprint returns the k-th test fingerprint.
func fingerprint(prefix string, k int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", prefix, k)))
	return hex.EncodeToString(h[:])
}

// firingSignals returns n firing signals spread round-robin over fps
// fingerprints, each with its own id.
func firingSignals(tag string, n, fps int) []*signal.Signal {
	out := make([]*signal.Signal, n)
	for i := range out {
		out[i] = testSignal(fingerprint(tag, i%fps), fmt.Sprintf("%s-%d", tag, i), signal.StatusFiring)
	}
	return out
}

func testSignal(fp, id string, st signal.Status) *signal.Signal {
	return &signal.Signal{ID: id, Fingerprint: fp, Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
		Status: st, Severity: signal.SeverityCritical, Namespace: "shop",
		Target: signal.Target{Kind: "Pod", Name: "web-" + fp[:6], Namespace: "shop"}, ReceivedAt: time.Now().UTC()}
}

// publish puts sigs on the signals subject as the receiver does, with
// their ids as msg-ids, and waits for JetStream to store all of them.
func (p *pipeline) publish(t testing.TB, sigs ...*signal.Signal) {
	t.Helper()
	const batch = 500
	for i := 0; i < len(sigs); i += batch {
		outs := make([]bus.Output, 0, batch)
		for _, s := range sigs[i:min(i+batch, len(sigs))] {
			data, err := signal.Encode(s)
			require.NoError(t, err)
			outs = append(outs, bus.Output{Subject: p.subj.Signals(s.Source), Data: data, MsgID: s.ID})
		}
		_, err := p.pub.Publish(context.Background(), outs...)
		require.NoError(t, err, "publishing signals")
	}
}

// publishAsync publishes sigs in the background in small batches, so a
// test can break something while they flow.
func (p *pipeline) publishAsync(t testing.TB, sigs []*signal.Signal) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(sigs); i += 50 {
			p.publish(t, sigs[i:min(i+50, len(sigs))]...)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return done
}

// consumer returns the deduper's durable consumer state.
func (p *pipeline) consumer(t testing.TB) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.conn.JS.Consumer(ctx, p.subj.StreamName(bus.StreamSignals), dedup.StageName)
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	return info
}

// waitSettled waits until the deduper has acked every signal published.
func (p *pipeline) waitSettled(t testing.TB, want uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		info := p.consumer(t)
		if info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deduper did not settle within %s: pending %d, ack pending %d, ack floor %d of %d",
				within, info.NumPending, info.NumAckPending, info.AckFloor.Stream, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// subjectCounts returns how many messages each subject of a stream holds.
func (p *pipeline) subjectCounts(t testing.TB, kind string) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := p.conn.JS.Stream(ctx, p.subj.StreamName(kind))
	require.NoError(t, err)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	require.NoError(t, err)
	if info.State.Subjects == nil {
		return map[string]uint64{}
	}
	return info.State.Subjects
}

// events reads every incident event the deduper published, in order.
func (p *pipeline) events(t testing.TB) []published {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.conn.JS.OrderedConsumer(ctx, p.subj.StreamName(bus.StreamIncidents), jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	total := int(info.NumPending)
	var out []published
	for len(out) < total {
		batch, err := c.Fetch(min(total-len(out), 500), jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			var ev incident.Event
			require.NoError(t, json.Unmarshal(m.Data(), &ev))
			out = append(out, published{Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Event: ev})
		}
		require.NoError(t, batch.Error())
	}
	return out
}

// published is one deduper output as stored in JetStream.
type published struct {
	Subject string
	MsgID   string
	Event   incident.Event
}

// redisConfig is the default single-node configuration pointed at addr.
func redisConfig(addrs ...string) config.Redis {
	cfg := config.DefaultRedis()
	cfg.Addrs = addrs
	return cfg
}

// sumCounts returns the records' counts over fps fingerprints of tag and
// how many have a record.
func sumCounts(t testing.TB, s record.Store, tag string, fps int) (total int64, found int) {
	t.Helper()
	for k := range fps {
		rec, err := s.Get(context.Background(), fingerprint(tag, k))
		if err == nil {
			total += rec.Count
			found++
		}
	}
	return total, found
}

// assertNewestPublished checks that the deduper published each of the fps
// fingerprints of tag at its record's newest state: the next stage gets
// every count even where the events of decisions taken together were
// coalesced into their newest. It returns how many updates it found.
func assertNewestPublished(t testing.TB, p *pipeline, store record.Store, tag string, fps int) int {
	t.Helper()
	newest := map[string]incident.Event{}
	updates := 0
	for _, e := range p.events(t) {
		if e.Subject != p.subj.DedupNew() {
			updates++
		}
		if n, ok := newest[e.Event.Fingerprint]; !ok || e.Event.Revision > n.Revision {
			newest[e.Event.Fingerprint] = e.Event
		}
	}
	for k := range fps {
		fp := fingerprint(tag, k)
		rec, err := store.Get(context.Background(), fp)
		if !assert.NoError(t, err, "record of %s", fp) {
			continue
		}
		ev := newest[fp]
		assert.Equal(t, rec.Revision, ev.Revision, "the newest revision of %s is published", fp)
		assert.Equal(t, rec.Count, ev.Count, "with its count")
	}
	return updates
}
