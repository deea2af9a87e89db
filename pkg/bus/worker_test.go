package bus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// env is a JetStream server with the pipeline's streams and a "test"
// stage consuming the signals stream.
type env struct {
	t    testing.TB
	cfg  config.Bus
	conn *bus.Conn
	subj bus.Subjects
	pub  *bus.Publisher
}

func newEnv(t testing.TB, mutate func(*config.Bus)) *env {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := config.DefaultBus()
	cfg.URL = n.URL
	cfg.Consumer.AckWait = time.Second
	cfg.Consumer.BackOff = nil
	cfg.Consumer.RetryDelays = []time.Duration{50 * time.Millisecond}
	cfg.Consumer.FetchMaxWait = 500 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	conn, err := bus.Connect(cfg, "bus-test", quiet())
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(context.Background(), conn.JS, cfg))
	return &env{t: t, cfg: cfg, conn: conn, subj: bus.NewSubjects(cfg.Prefix), pub: bus.NewPublisher(conn.JS, cfg.PublishTimeout)}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// publishInputs stores n messages with ids in-0..in-(n-1).
func (e *env) publishInputs(n int) {
	e.t.Helper()
	const chunk = 1000
	for start := 0; start < n; start += chunk {
		var outs []bus.Output
		for i := start; i < min(start+chunk, n); i++ {
			outs = append(outs, bus.Output{Subject: e.subj.Signals("alertmanager"), Data: []byte(strconv.Itoa(i)), MsgID: "in-" + strconv.Itoa(i)})
		}
		_, err := e.pub.Publish(context.Background(), outs...)
		require.NoError(e.t, err)
	}
}

// worker starts a worker for h; stop cancels it and waits for Run.
func (e *env) worker(h bus.Handler, drain time.Duration) (w *bus.Worker, stop func()) {
	e.t.Helper()
	cons, err := bus.EnsureConsumer(context.Background(), e.conn.JS, e.cfg, bus.ConsumerSpec{
		Stage: "test", Stream: bus.StreamSignals, Subjects: []string{e.subj.AllSignals()},
	})
	require.NoError(e.t, err)
	w, err = bus.NewWorker(bus.WorkerOptions{
		Stage: "test", Consumer: cons, Publisher: e.pub, JS: e.conn.JS, Handler: h, Subjects: e.subj,
		Config: e.cfg.Consumer, DrainTimeout: drain, Metrics: bus.NewMetrics(prometheus.NewRegistry()), Log: quiet(),
	})
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return w, stop
}

// streamMsgs returns the messages stored on subject.
func (e *env) streamMsgs(kind, subject string) []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.conn.JS.Stream(ctx, e.subj.StreamName(kind))
	require.NoError(e.t, err)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	require.NoError(e.t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// count returns how many messages are stored on subject.
func (e *env) count(kind, subject string) int {
	e.t.Helper()
	st, err := e.conn.JS.Stream(context.Background(), e.subj.StreamName(kind))
	require.NoError(e.t, err)
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	require.NoError(e.t, err)
	return int(info.State.Subjects[subject])
}

// forward is a handler that republishes its input on the incidents
// stream with a msg-id derived from the input.
func (e *env) forward(m *bus.Msg) []bus.Output {
	return []bus.Output{{Subject: e.subj.IncidentsOpen(), Data: m.Data, MsgID: "out-" + m.MsgID()}}
}

func TestWorker_acksAfterOutputsAreStored(t *testing.T) {
	e := newEnv(t, nil)
	e.publishInputs(100)
	var handled atomic.Int64
	e.worker(bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		handled.Add(1)
		return e.forward(m), nil
	}), time.Second)
	require.Eventually(t, func() bool { return len(e.streamMsgs(bus.StreamIncidents, e.subj.IncidentsOpen())) == 100 }, 10*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		info, err := mustConsumer(t, e).Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 5*time.Second, 50*time.Millisecond, "everything acked")
	assert.EqualValues(t, 100, handled.Load(), "each input handled once when nothing fails")
}

func mustConsumer(t testing.TB, e *env) jetstream.Consumer {
	c, err := e.conn.JS.Consumer(context.Background(), e.subj.StreamName(bus.StreamSignals), "test")
	require.NoError(t, err)
	return c
}

func TestWorker_transientErrorIsRetried(t *testing.T) {
	e := newEnv(t, nil)
	e.publishInputs(1)
	var calls atomic.Int64
	e.worker(bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		if calls.Add(1) < 3 {
			return nil, errors.New("redis: connection refused")
		}
		assert.EqualValues(t, 3, m.Delivered)
		return e.forward(m), nil
	}), time.Second)
	require.Eventually(t, func() bool { return len(e.streamMsgs(bus.StreamIncidents, e.subj.IncidentsOpen())) == 1 }, 10*time.Second, 20*time.Millisecond)
	assert.EqualValues(t, 3, calls.Load())
	assert.Empty(t, e.streamMsgs(bus.StreamDLQ, e.subj.DLQ("test")))
}

func TestWorker_handlerThatDiesGetsTheMessageAgain(t *testing.T) {
	e := newEnv(t, nil)
	e.publishInputs(1)
	// The first worker takes the message and never finishes it (a process
	// frozen or killed mid-message); its drain gives up.
	block := make(chan struct{})
	defer close(block)
	var first atomic.Int64
	_, stop := e.worker(bus.HandlerFunc(func(ctx context.Context, _ *bus.Msg) ([]bus.Output, error) {
		first.Add(1)
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, errors.New("died")
	}), 10*time.Millisecond)
	require.Eventually(t, func() bool { return first.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	stop()

	var second atomic.Int64
	e.worker(bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		second.Add(1)
		return e.forward(m), nil
	}), time.Second)
	require.Eventually(t, func() bool { return len(e.streamMsgs(bus.StreamIncidents, e.subj.IncidentsOpen())) == 1 }, 10*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, second.Load(), int64(1))
}

func TestWorker_poisonMessageGoesToDLQWithReason(t *testing.T) {
	e := newEnv(t, func(c *config.Bus) { c.Consumer.MaxDeliver = 3 })
	e.publishInputs(3)
	e.worker(bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		switch string(m.Data) {
		case "0":
			return nil, bus.Permanent(fmt.Errorf("decoding signal: unexpected end of JSON input"))
		case "1":
			return nil, errors.New("api server: 503")
		case "2":
			panic("handler bug")
		}
		return nil, nil
	}), time.Second)
	require.Eventually(t, func() bool { return len(e.streamMsgs(bus.StreamDLQ, e.subj.DLQ("test"))) == 3 }, 15*time.Second, 50*time.Millisecond)
	reasons := map[string]string{}
	for _, m := range e.streamMsgs(bus.StreamDLQ, e.subj.DLQ("test")) {
		reasons[string(m.Data)] = m.Header.Get(bus.HeaderDLQReason)
		assert.Equal(t, "test", m.Header.Get(bus.HeaderDLQStage))
		assert.Equal(t, e.subj.Signals("alertmanager"), m.Header.Get(bus.HeaderDLQSubject))
		assert.NotEmpty(t, m.Header.Get(bus.HeaderDLQSequence))
	}
	assert.Equal(t, "decoding signal: unexpected end of JSON input", reasons["0"], "permanent: first delivery")
	assert.Equal(t, "gave up after 3 deliveries: api server: 503", reasons["1"])
	assert.Contains(t, reasons["2"], "handler panic: handler bug")
	require.Eventually(t, func() bool {
		info, err := mustConsumer(t, e).Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumRedelivered == 0
	}, 5*time.Second, 50*time.Millisecond, "terminated messages are not redelivered")
}

func TestWorker_stoppingDuringABurstLosesNothing(t *testing.T) {
	e := newEnv(t, nil)
	const n = 5000
	e.publishInputs(n)
	handler := bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		time.Sleep(100 * time.Microsecond)
		return e.forward(m), nil
	})
	var mu sync.Mutex
	var stops []func()
	for range 3 {
		_, stop := e.worker(handler, 2*time.Second)
		mu.Lock()
		stops = append(stops, stop)
		mu.Unlock()
		time.Sleep(150 * time.Millisecond)
		stop() // graceful stop mid-burst
	}
	e.worker(handler, 2*time.Second)
	require.Eventually(t, func() bool {
		return e.count(bus.StreamIncidents, e.subj.IncidentsOpen()) == n
	}, 60*time.Second, 200*time.Millisecond)
	seen := map[string]bool{}
	for _, m := range e.streamMsgs(bus.StreamIncidents, e.subj.IncidentsOpen()) {
		seen[string(m.Data)] = true
	}
	assert.Len(t, seen, n, "every input produced its output exactly once")
}

// TestWorker_noStallUnderSustainedLoad catches the pull stall seen with a
// long-lived Consume(): while a backlog waits, no gap between handled
// messages may approach a pull expiry.
func TestWorker_noStallUnderSustainedLoad(t *testing.T) {
	e := newEnv(t, nil)
	const n = 30000
	var last atomic.Int64
	var maxGap atomic.Int64
	var handled atomic.Int64
	e.worker(bus.HandlerFunc(func(_ context.Context, _ *bus.Msg) ([]bus.Output, error) {
		now := time.Now().UnixNano()
		if prev := last.Swap(now); prev != 0 {
			if gap := now - prev; gap > maxGap.Load() {
				maxGap.Store(gap)
			}
		}
		handled.Add(1)
		return nil, nil
	}), time.Second)
	e.publishInputs(n)
	require.Eventually(t, func() bool { return handled.Load() >= n }, 120*time.Second, 100*time.Millisecond)
	assert.Less(t, time.Duration(maxGap.Load()), 3*time.Second, "a gap this long is a stalled pull")
}

// TestWorker_retriesByReasonWithTheServersDelay: the handler fails its
// first delivery as throttled with a Retry-After well above the stage's
// retry delay, its second as forbidden, and succeeds on the third. Each
// retry is counted under its reason, the second delivery comes no sooner
// than the Retry-After, and nothing reaches the DLQ with the default
// max_deliver (no limit).
func TestWorker_retriesByReasonWithTheServersDelay(t *testing.T) {
	e := newEnv(t, nil)
	require.Equal(t, -1, e.cfg.Consumer.MaxDeliver, "the default retries for as long as the stream keeps the message")
	const retryAfter = 400 * time.Millisecond // the stage's own delay is 50ms
	e.publishInputs(1)
	var mu sync.Mutex
	var delivered []time.Time
	var calls atomic.Int64
	h := bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		n := calls.Add(1)
		mu.Lock()
		delivered = append(delivered, time.Now())
		mu.Unlock()
		switch n {
		case 1:
			return nil, bus.RetryAfter(errors.New("429 Too Many Requests"), retryAfter, "throttled")
		case 2:
			return nil, bus.Retry(errors.New("403 Forbidden: quota exceeded"), "forbidden")
		}
		return e.forward(m), nil
	})
	m := bus.NewMetrics(prometheus.NewRegistry())
	e.workerWith(h, m)
	require.Eventually(t, func() bool { return len(e.streamMsgs(bus.StreamIncidents, e.subj.IncidentsOpen())) == 1 }, 10*time.Second, 20*time.Millisecond)
	require.EqualValues(t, 3, calls.Load())
	mu.Lock()
	defer mu.Unlock()
	assert.GreaterOrEqual(t, delivered[1].Sub(delivered[0]), retryAfter, "Retry-After is a floor for the redelivery")
	assert.Equal(t, 1.0, counter(t, m.Retries.WithLabelValues("test", "throttled")))
	assert.Equal(t, 1.0, counter(t, m.Retries.WithLabelValues("test", "forbidden")))
	assert.Equal(t, 2.0, counter(t, m.Messages.WithLabelValues("test", bus.ResultNak)))
	assert.Empty(t, e.streamMsgs(bus.StreamDLQ, e.subj.DLQ("test")))
}

// TestWorker_longHandlingSendsInProgressAcks: one worker holds a message
// for well over AckWait while a second worker of the same durable pulls.
// The first sends in-progress acks, so the server never redelivers the
// message to the second; once released it is acked, delivered once.
func TestWorker_longHandlingSendsInProgressAcks(t *testing.T) {
	e := newEnv(t, func(c *config.Bus) { c.Consumer.AckWait = 600 * time.Millisecond })
	e.publishInputs(1)
	release := make(chan struct{})
	var first, second atomic.Int64
	var firstDelivered atomic.Uint64
	m1 := bus.NewMetrics(prometheus.NewRegistry())
	e.workerWith(bus.HandlerFunc(func(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
		first.Add(1)
		firstDelivered.Store(m.Delivered)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return e.forward(m), nil
	}), m1)
	require.Eventually(t, func() bool { return first.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	e.workerWith(bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		second.Add(1)
		return e.forward(m), nil
	}), bus.NewMetrics(prometheus.NewRegistry()))

	// One in-progress ack every AckWait/3, the first once the message is
	// AckWait/3 old: six of them mean it was held for over two AckWaits.
	acks := m1.InProgressAcks.WithLabelValues("test")
	require.Eventually(t, func() bool { return counter(t, acks) >= 6 }, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, second.Load(), "not redelivered to the other worker while in progress")
	close(release)
	require.Eventually(t, func() bool {
		info, err := mustConsumer(t, e).Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 5*time.Second, 10*time.Millisecond, "acked")
	info, err := mustConsumer(t, e).Info(context.Background())
	require.NoError(t, err)
	assert.Zero(t, info.NumRedelivered)
	assert.Zero(t, second.Load())
	assert.EqualValues(t, 1, first.Load())
	assert.EqualValues(t, 1, firstDelivered.Load())
	assert.Len(t, e.streamMsgs(bus.StreamIncidents, e.subj.IncidentsOpen()), 1)
}

// workerWith starts a worker of the "test" durable for h with metrics m
// until the test ends.
func (e *env) workerWith(h bus.Handler, m *bus.Metrics) {
	e.t.Helper()
	cons, err := bus.EnsureConsumer(context.Background(), e.conn.JS, e.cfg, bus.ConsumerSpec{
		Stage: "test", Stream: bus.StreamSignals, Subjects: []string{e.subj.AllSignals()},
	})
	require.NoError(e.t, err)
	w, err := bus.NewWorker(bus.WorkerOptions{
		Stage: "test", Consumer: cons, Publisher: e.pub, JS: e.conn.JS, Handler: h, Subjects: e.subj,
		Config: e.cfg.Consumer, DrainTimeout: time.Second, Metrics: m, Log: quiet(),
	})
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func counter(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	require.NoError(t, c.Write(&d))
	return d.GetCounter().GetValue()
}
