package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/config"
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
	Publisher *Publisher
	Handler   Handler
	Subjects  Subjects
	Config    config.Consumer
	// DrainTimeout bounds the wait for in-flight messages at shutdown.
	DrainTimeout time.Duration
	Metrics      *Metrics
	Log          *slog.Logger
}

// Worker is the consumer loop every stage runs: bounded concurrent
// handling of a durable pull consumer, ack after outputs are durable,
// NakWithDelay on transient failure, DLQ then Term on permanent failure or
// the last allowed delivery, and a bounded drain at shutdown.
type Worker struct {
	o        WorkerOptions
	fetching atomic.Bool
	lastErr  atomic.Pointer[error]
}

// NewWorker returns a Worker; it starts nothing until Run.
func NewWorker(o WorkerOptions) (*Worker, error) {
	if o.Stage == "" || o.Consumer == nil || o.Publisher == nil || o.Handler == nil || o.Metrics == nil {
		return nil, errors.New("bus: worker needs a stage, consumer, publisher, handler and metrics")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("stage", o.Stage)
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 15 * time.Second
	}
	return &Worker{o: o}, nil
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

	go w.pollPending(ctx)
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

// handle runs the handler on one message and settles it.
func (w *Worker) handle(ctx context.Context, jm jetstream.Msg) {
	start := time.Now()
	defer func() { w.o.Metrics.Handle.WithLabelValues(w.o.Stage).Observe(time.Since(start).Seconds()) }()
	m := &Msg{Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers()}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	if md, err := jm.Metadata(); err == nil {
		m.Stream, m.StreamSeq, m.Delivered, m.Timestamp = md.Stream, md.Sequence.Stream, md.NumDelivered, md.Timestamp
	}
	outs, err := w.call(ctx, m)
	if err == nil {
		propagate(m.Header, outs)
		var res PublishResult
		res, err = w.o.Publisher.Publish(ctx, outs...)
		if err == nil {
			w.o.Metrics.Published.WithLabelValues(w.o.Stage, "false").Add(float64(len(outs) - res.Duplicates))
			w.o.Metrics.Published.WithLabelValues(w.o.Stage, "true").Add(float64(res.Duplicates))
		}
	}
	if err == nil {
		if aerr := jm.Ack(); aerr != nil {
			// The work is done and idempotent; a lost ack only means a
			// redelivery that the handler recognises.
			w.o.Log.Warn("ack failed", "seq", m.StreamSeq, "err", aerr)
		}
		w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultAck).Inc()
		return
	}
	last := w.o.Config.MaxDeliver > 0 && m.Delivered >= uint64(w.o.Config.MaxDeliver)
	if IsPermanent(err) || last {
		reason := err.Error()
		if !IsPermanent(err) {
			reason = fmt.Sprintf("gave up after %d deliveries: %s", m.Delivered, reason)
		}
		w.deadLetter(ctx, jm, m, reason)
		return
	}
	delay := retryDelay(w.o.Config.RetryDelays, m.Delivered)
	w.o.Log.Warn("handling failed; will retry", "subject", m.Subject, "seq", m.StreamSeq,
		"delivered", m.Delivered, "delay", delay, "fingerprint", m.Header.Get(HeaderFingerprint), "err", err)
	_ = jm.NakWithDelay(delay)
	w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultNak).Inc()
}

// call runs the handler, turning a panic into an ordinary (transient)
// error so one bad message cannot take the process down; if the panic is
// deterministic the message reaches the DLQ after MaxDeliver.
func (w *Worker) call(ctx context.Context, m *Msg) (outs []Output, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
			w.o.Log.Error("handler panic", "seq", m.StreamSeq, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	return w.o.Handler.Handle(ctx, m)
}

// deadLetter copies the message to the stage's DLQ with the reason and
// terminates it. If the copy cannot be stored the message is Nak'ed
// instead: it is never dropped without its copy.
func (w *Worker) deadLetter(ctx context.Context, jm jetstream.Msg, m *Msg, reason string) {
	h := nats.Header{}
	for k, v := range m.Header {
		if k == jetstream.MsgIDHeader {
			continue
		}
		h[k] = v
	}
	h.Set(HeaderDLQReason, reason)
	h.Set(HeaderDLQStage, w.o.Stage)
	h.Set(HeaderDLQSubject, m.Subject)
	h.Set(HeaderDLQStream, m.Stream)
	h.Set(HeaderDLQSequence, strconv.FormatUint(m.StreamSeq, 10))
	h.Set(HeaderDLQDeliveries, strconv.FormatUint(m.Delivered, 10))
	out := Output{
		Subject: w.o.Subjects.DLQ(w.o.Stage),
		Data:    m.Data,
		MsgID:   "dlq:" + w.o.Stage + ":" + m.Stream + ":" + strconv.FormatUint(m.StreamSeq, 10),
		Header:  h,
	}
	if _, err := w.o.Publisher.Publish(ctx, out); err != nil {
		w.o.Log.Error("dead-lettering failed; will retry", "seq", m.StreamSeq, "reason", reason, "err", err)
		_ = jm.NakWithDelay(retryDelay(w.o.Config.RetryDelays, m.Delivered))
		w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultNak).Inc()
		return
	}
	w.o.Log.Error("message dead-lettered", "subject", m.Subject, "seq", m.StreamSeq, "delivered", m.Delivered,
		"fingerprint", m.Header.Get(HeaderFingerprint), "reason", reason)
	_ = jm.TermWithReason(truncate(reason, 256))
	w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultDLQ).Inc()
	w.o.Metrics.Messages.WithLabelValues(w.o.Stage, ResultTerm).Inc()
}

// propagate copies the trace context and receipt time of the input onto
// outputs that do not set their own.
func propagate(in nats.Header, outs []Output) {
	tp, rcv := in.Get(HeaderTraceparent), in.Get(HeaderReceivedAt)
	if tp == "" && rcv == "" {
		return
	}
	for i := range outs {
		if outs[i].Header == nil {
			outs[i].Header = nats.Header{}
		}
		if tp != "" && outs[i].Header.Get(HeaderTraceparent) == "" {
			outs[i].Header.Set(HeaderTraceparent, tp)
		}
		if rcv != "" && outs[i].Header.Get(HeaderReceivedAt) == "" {
			outs[i].Header.Set(HeaderReceivedAt, rcv)
		}
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

// pollPending keeps the pending gauge current; it reads consumer info
// every few seconds, which is cheap for the server.
func (w *Worker) pollPending(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if info, err := w.o.Consumer.Info(ictx); err == nil {
			w.o.Metrics.Pending.WithLabelValues(w.o.Stage).Set(float64(info.NumPending))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
