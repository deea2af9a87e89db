package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/tracing"
)

// Msg is one delivered message as a handler sees it.
type Msg struct {
	Subject string
	Data    []byte
	Header  nats.Header
	// Stream and StreamSeq identify the message in its stream; together
	// they are unique and stable across redeliveries.
	Stream    string
	StreamSeq uint64
	// Delivered counts deliveries of this message, 1 on the first.
	Delivered uint64
	// Timestamp is when the message was stored in the stream.
	Timestamp time.Time
}

// MsgID returns the message's idempotency key (Nats-Msg-Id), or, when it
// was published without one, an id derived from its stream position.
func (m *Msg) MsgID() string {
	if id := m.Header.Get(jetstream.MsgIDHeader); id != "" {
		return id
	}
	return m.Stream + ":" + strconv.FormatUint(m.StreamSeq, 10)
}

// Handler is a stage's pure step: it turns one message into outputs. It
// never acks: the loop acks the input only after every output is stored.
// Return an error wrapped with Permanent for input no retry can fix.
type Handler interface {
	Handle(ctx context.Context, m *Msg) ([]Output, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *Msg) ([]Output, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m *Msg) ([]Output, error) { return f(ctx, m) }

// WorkerOptions wires a Worker.
type WorkerOptions struct {
	// Stage names the worker in metrics, logs and its DLQ subject.
	Stage    string
	Consumer jetstream.Consumer
	// Publisher publishes outputs and DLQ copies.
	Publisher Sender
	// JS reads the consumer's stream and the DLQ stream for the stage's
	// gauges (oldest unprocessed age, DLQ depth).
	JS       jetstream.JetStream
	Handler  Handler
	Subjects Subjects
	Config   config.Consumer
	// DrainTimeout bounds the wait for in-flight messages at shutdown.
	DrainTimeout time.Duration
	// StatsInterval is how often the consumer's gauges (pending,
	// ack pending, oldest unprocessed age, DLQ depth) are refreshed; 5s
	// when zero.
	StatsInterval time.Duration
	Metrics       *Metrics
	Log           *slog.Logger
	// Tracer starts the stage's span per message, named Span (the stage's
	// name when empty); a no-op tracer when nil.
	Tracer trace.Tracer
	Span   string
}

// Worker is the consumer loop every stage runs: bounded concurrent
// handling of a durable pull consumer, ack after outputs are durable,
// NakWithDelay on transient failure (counted by reason), DLQ then Term on
// permanent failure or the last allowed delivery, in-progress acks for
// messages handled for longer than a third of AckWait, and a bounded
// drain at shutdown.
type Worker struct {
	o WorkerOptions
	// h is the stage's handler inside the middleware chain; what it
	// returns is all the loop needs to settle a message.
	h        Handler
	stats    *consumerStats
	fetching atomic.Bool
	lastErr  atomic.Pointer[error]
}

// NewWorker returns a Worker; it starts nothing until Run.
func NewWorker(o WorkerOptions) (*Worker, error) {
	if o.Stage == "" || o.Consumer == nil || o.Publisher == nil || o.JS == nil || o.Handler == nil || o.Metrics == nil {
		return nil, errors.New("bus: worker needs a stage, consumer, publisher, jetstream, handler and metrics")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("stage", o.Stage)
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 15 * time.Second
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = 5 * time.Second
	}
	if o.Tracer == nil {
		o.Tracer = tracing.Noop().Tracer()
	}
	if o.Span == "" {
		o.Span = o.Stage
	}
	// Innermost first: a panic becomes an error before anything else sees
	// it; outputs get the stage span's trace context before they are
	// published; a publish failure on the last delivery is dead-lettered
	// like a handler's; the span covers all of it.
	h := Chain(o.Handler,
		Timer(o.Metrics.Handle.WithLabelValues(o.Stage)),
		Trace(o.Tracer, o.Span, o.Stage),
		DeadLetter(o.Publisher, o.Subjects, o.Stage, o.Config.MaxDeliver, o.Log),
		Publish(o.Publisher, o.Stage, o.Metrics),
		PropagateTrace,
		Recoverer(o.Log),
	)
	return &Worker{o: o, h: h, stats: newConsumerStats(o.JS, o)}, nil
}

// Ready reports whether the loop is pulling without errors.
func (w *Worker) Ready() error {
	if !w.fetching.Load() {
		return fmt.Errorf("%s: consumer loop not running", w.o.Stage)
	}
	if p := w.lastErr.Load(); p != nil && *p != nil {
		return fmt.Errorf("%s: pulling: %w", w.o.Stage, *p)
	}
	return nil
}

// Run pulls and handles messages until ctx ends, then stops pulling and
// waits up to DrainTimeout for in-flight messages. Messages it could not
// finish stay unacked and are redelivered, to this or another replica.
func (w *Worker) Run(ctx context.Context) error {
	cfg := w.o.Config
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	// Handlers outlive ctx by at most the drain budget, so a shutdown
	// finishes what it started instead of leaving half-published work.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()

	statsDone := make(chan struct{})
	go func() { defer close(statsDone); w.pollStats(ctx) }()
	defer func() { <-statsDone }()
	// In-progress acks go on until the last handler has finished, drain
	// included: that is when a redelivery would duplicate work.
	prog := newProgress(cfg.AckWait/3, w.o.Metrics.InProgressAcks.WithLabelValues(w.o.Stage))
	progStop, progDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(progDone); prog.run(progStop) }()
	defer func() { close(progStop); <-progDone }()
	w.fetching.Store(true)
	defer w.fetching.Store(false)
	pullBackoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		// Wait for at least one free slot, then ask for as many messages
		// as there are free slots, so nothing fetched waits unhandled
		// while its AckWait runs.
		select {
		case sem <- struct{}{}:
			<-sem
		case <-ctx.Done():
			continue
		}
		want := min(cfg.FetchBatch, cap(sem)-len(sem))
		batch, err := w.o.Consumer.Fetch(want, jetstream.FetchMaxWait(cfg.FetchMaxWait))
		if err != nil {
			w.setErr(err)
			w.o.Log.Warn("pull failed", "err", err)
			sleepCtx(ctx, pullBackoff)
			pullBackoff = min(pullBackoff*2, 5*time.Second)
			continue
		}
		for msg := range batch.Messages() {
			if ctx.Err() != nil {
				// Shutting down: hand it straight back for another replica.
				_ = msg.Nak()
				w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultRequeued).Inc()
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			w.o.Metrics.InFlight.WithLabelValues(w.o.Stage).Inc()
			go func() {
				defer func() {
					<-sem
					w.o.Metrics.InFlight.WithLabelValues(w.o.Stage).Dec()
					wg.Done()
				}()
				prog.add(msg)
				defer prog.done(msg)
				w.handle(hctx, msg)
			}()
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			w.setErr(err)
			w.o.Log.Warn("pull ended with error", "err", err)
			sleepCtx(ctx, pullBackoff)
			pullBackoff = min(pullBackoff*2, 5*time.Second)
			continue
		}
		w.setErr(nil)
		pullBackoff = 100 * time.Millisecond
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.o.DrainTimeout):
		w.o.Log.Warn("drain timed out; unfinished messages will be redelivered", "timeout", w.o.DrainTimeout)
		hcancel()
		<-done
	}
	return nil
}

func (w *Worker) setErr(err error) {
	if err == nil {
		w.lastErr.Store(nil)
		return
	}
	w.lastErr.Store(&err)
}

// handle runs the chain on one message and settles it.
func (w *Worker) handle(ctx context.Context, jm jetstream.Msg) {
	m := &Msg{Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers()}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	if md, err := jm.Metadata(); err == nil {
		m.Stream, m.StreamSeq, m.Delivered, m.Timestamp = md.Stream, md.Sequence.Stream, md.NumDelivered, md.Timestamp
	}
	// The message's trace context is the parent of the stage's span, and
	// puts its trace id on the log lines about the message.
	ctx = tracing.FromHeader(ctx, m.Header)
	_, err := w.h.Handle(ctx, m)
	w.settle(ctx, jm, m, err)
}

// settle acks, terminates or naks a message by what the chain returned:
// nil once the outputs are stored, *DeadLettered once its DLQ copy is
// stored, anything else to be retried.
func (w *Worker) settle(ctx context.Context, jm jetstream.Msg, m *Msg, err error) {
	var dl *DeadLettered
	switch {
	case err == nil:
		if aerr := jm.Ack(); aerr != nil {
			// The work is done and idempotent; a lost ack only means a
			// redelivery that the handler recognises.
			w.o.Log.WarnContext(ctx, "ack failed", "seq", m.StreamSeq, "err", aerr)
		}
		w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultAck).Inc()
	case errors.As(err, &dl):
		// Only after the copy is stored: a message is never dropped
		// without its DLQ copy.
		_ = jm.TermWithReason(truncate(dl.Reason, 256))
		w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultDLQ).Inc()
		w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultTerm).Inc()
	default:
		// The server's Retry-After is a floor, not a replacement: a
		// server answering "1s" for an hour still gets the stage's
		// growing delays.
		reason, after := RetryReason(err)
		delay := max(retryDelay(w.o.Config.RetryDelays, m.Delivered), after)
		w.o.Log.WarnContext(ctx, "handling failed; will retry", "subject", m.Subject, "seq", m.StreamSeq,
			"delivered", m.Delivered, "reason", reason, "delay", delay, "fingerprint", m.Header.Get(HeaderFingerprint), "err", err)
		_ = jm.NakWithDelay(delay)
		w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultNak).Inc()
		w.o.Metrics.Retries.WithLabelValues(w.o.Stage, reason).Inc()
	}
}

// retryDelay picks the NakWithDelay delay for a delivery count.
func retryDelay(delays []time.Duration, delivered uint64) time.Duration {
	if len(delays) == 0 {
		return time.Second
	}
	i := int(min(delivered, uint64(len(delays)))) - 1
	return delays[max(i, 0)]
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
