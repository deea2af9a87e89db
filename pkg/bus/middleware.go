package bus

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/stormweir/stormweir/pkg/tracing"
)

// Middleware wraps a Handler with one concern, in the shape of
// watermill's router middleware: the Worker composes recovery, trace
// propagation, publishing, dead-lettering and timing around a stage's pure
// handler, and the loop only settles what the chain returns.
type Middleware func(Handler) Handler

// Chain returns h wrapped by mws, the first outermost: Chain(h, a, b)
// runs a, then b, then h.
func Chain(h Handler, mws ...Middleware) Handler {
	for _, mw := range slices.Backward(mws) {
		h = mw(h)
	}
	return h
}

// Sender stores outputs on the bus and returns once every one is stored;
// *Publisher is the real one.
type Sender interface {
	Publish(ctx context.Context, outs ...Output) (PublishResult, error)
}

// Recoverer turns a handler's panic into a transient error (reason
// ReasonPanic), so one bad message cannot take the process down; a
// deterministic panic retries until a fixed release handles the message
// (or, with a finite bus.consumer.max_deliver, reaches the DLQ), and
// stormweir_worker_retries_total{reason="panic"} shows it.
func Recoverer(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) (outs []Output, err error) {
			defer func() {
				if r := recover(); r != nil {
					outs, err = nil, Retry(fmt.Errorf("handler panic: %v", r), ReasonPanic)
					log.ErrorContext(ctx, "handler panic", "seq", m.StreamSeq, "panic", r, "stack", string(debug.Stack()))
				}
			}()
			return next.Handle(ctx, m)
		})
	}
}

// PropagateTrace copies the trace context and receipt time of the input
// onto outputs that do not set their own, so both travel end to end. The
// trace context is that of the span in ctx (the stage's span, see Trace),
// so the next stage's span is its child; without one, the input's.
func PropagateTrace(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, m *Msg) ([]Output, error) {
		outs, err := next.Handle(ctx, m)
		if err == nil {
			propagate(ctx, m.Header, outs)
		}
		return outs, err
	})
}

// Trace runs the rest of the chain in a consumer span called name, child
// of the span context the worker read from the message's traceparent
// header, so every stage of one alert records into one trace. With a
// no-op tracer the span only carries the parent's context on. It marks
// the span failed with what the chain returned.
func Trace(tracer trace.Tracer, name, stage string) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) ([]Output, error) {
			ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer))
			defer span.End()
			if span.IsRecording() {
				span.SetAttributes(
					attribute.String("messaging.system", "nats"),
					attribute.String("messaging.destination.name", m.Subject),
					attribute.String("messaging.consumer.group.name", stage),
					attribute.String("messaging.message.id", m.MsgID()),
					attribute.Int64("stormweir.stream_seq", int64(m.StreamSeq)),
					attribute.Int64("stormweir.delivered", int64(m.Delivered)),
					attribute.String("stormweir.fingerprint", m.Header.Get(HeaderFingerprint)),
				)
			}
			outs, err := next.Handle(ctx, m)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return outs, err
		})
	}
}

// Publish stores the handler's outputs and returns none: the input is
// acked only after every output is stored, so a failure here leaves it to
// be retried, and the retry republishes the same msg-ids, which JetStream
// absorbs. It counts what was published for stage.
func Publish(pub Sender, stage string, metrics *Metrics) Middleware {
	fresh, dup := metrics.Published.WithLabelValues(stage, "false"), metrics.Published.WithLabelValues(stage, "true")
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) ([]Output, error) {
			outs, err := next.Handle(ctx, m)
			if err != nil {
				return nil, err
			}
			res, err := pub.Publish(ctx, outs...)
			if err != nil {
				return nil, Retry(err, ReasonPublish)
			}
			fresh.Add(float64(len(outs) - res.Duplicates))
			dup.Add(float64(res.Duplicates))
			return nil, nil
		})
	}
}

// DeadLettered is the error of a message the DeadLetter middleware copied
// to the DLQ: the loop terminates it with the reason instead of retrying.
type DeadLettered struct {
	Reason string
}

func (d *DeadLettered) Error() string { return "dead-lettered: " + d.Reason }

// DeadLetter copies a message its handler gave up on (a Permanent error,
// or any error on the last of maxDeliver deliveries, since the server
// delivers it no more) to stage's DLQ
// subject with the reason and where it came from, and returns
// *DeadLettered. If the copy cannot be stored the error stays transient,
// so the message is retried: it is never dropped without its copy.
func DeadLetter(pub Sender, subj Subjects, stage string, maxDeliver int, log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) ([]Output, error) {
			outs, err := next.Handle(ctx, m)
			last := maxDeliver > 0 && m.Delivered >= uint64(maxDeliver)
			if err == nil || !IsPermanent(err) && !last {
				return outs, err
			}
			reason := err.Error()
			if !IsPermanent(err) {
				reason = fmt.Sprintf("gave up after %d deliveries: %s", m.Delivered, reason)
			}
			if _, perr := pub.Publish(ctx, deadLetter(m, subj, stage, reason)); perr != nil {
				log.ErrorContext(ctx, "dead-lettering failed; will retry", "seq", m.StreamSeq, "reason", reason, "err", perr)
				return nil, Retry(fmt.Errorf("dead-lettering (%s): %w", reason, perr), ReasonPublish)
			}
			log.ErrorContext(ctx, "message dead-lettered", "subject", m.Subject, "seq", m.StreamSeq, "delivered", m.Delivered,
				"fingerprint", m.Header.Get(HeaderFingerprint), "reason", reason)
			return nil, &DeadLettered{Reason: reason}
		})
	}
}

// deadLetter is m's DLQ copy: its data and headers (its msg-id moved to
// HeaderDLQMsgID), the reason and where it came from, under a msg-id of
// its own so a retried dead-lettering stores one copy.
func deadLetter(m *Msg, subj Subjects, stage, reason string) Output {
	h := make(nats.Header, len(m.Header)+7)
	for k, v := range m.Header {
		if k != jetstream.MsgIDHeader {
			h[k] = v
		}
	}
	h.Set(HeaderDLQReason, reason)
	h.Set(HeaderDLQStage, stage)
	h.Set(HeaderDLQSubject, m.Subject)
	h.Set(HeaderDLQStream, m.Stream)
	h.Set(HeaderDLQSequence, strconv.FormatUint(m.StreamSeq, 10))
	h.Set(HeaderDLQDeliveries, strconv.FormatUint(m.Delivered, 10))
	h.Set(HeaderDLQMsgID, m.MsgID())
	return Output{
		Subject: subj.DLQ(stage),
		Data:    m.Data,
		MsgID:   "dlq:" + stage + ":" + m.Stream + ":" + strconv.FormatUint(m.StreamSeq, 10),
		Header:  h,
	}
}

// Timer observes how long the rest of the chain took: handling, publishing
// and dead-lettering.
func Timer(o prometheus.Observer) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) ([]Output, error) {
			start := time.Now()
			defer func() { o.Observe(time.Since(start).Seconds()) }()
			return next.Handle(ctx, m)
		})
	}
}

// propagate copies the trace context of ctx (else the input's) and the
// receipt time of the input onto outputs that do not set their own.
func propagate(ctx context.Context, in nats.Header, outs []Output) {
	tp, rcv := tracing.Traceparent(ctx), in.Get(HeaderReceivedAt)
	if tp == "" {
		tp = in.Get(HeaderTraceparent)
	}
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
