package bus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
)

// sent records what a middleware published; err fails every publish.
type sent struct {
	outs []bus.Output
	err  error
}

func (s *sent) Publish(_ context.Context, outs ...bus.Output) (bus.PublishResult, error) {
	if s.err != nil {
		return bus.PublishResult{}, s.err
	}
	s.outs = append(s.outs, outs...)
	return bus.PublishResult{}, nil
}

func returning(outs []bus.Output, err error) bus.Handler {
	return bus.HandlerFunc(func(context.Context, *bus.Msg) ([]bus.Output, error) { return outs, err })
}

func msg(delivered uint64) *bus.Msg {
	return &bus.Msg{
		Subject: "p.signals.alertmanager", Data: []byte("payload"), Stream: "P_SIGNALS", StreamSeq: 42, Delivered: delivered,
		Header: nats.Header{jetstream.MsgIDHeader: []string{"sig-1"}, bus.HeaderFingerprint: []string{"fp"}},
	}
}

func TestChain_firstMiddlewareIsOutermost(t *testing.T) {
	var order []string
	mw := func(name string) bus.Middleware {
		return func(next bus.Handler) bus.Handler {
			return bus.HandlerFunc(func(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
				order = append(order, name)
				return next.Handle(ctx, m)
			})
		}
	}
	h := bus.Chain(bus.HandlerFunc(func(context.Context, *bus.Msg) ([]bus.Output, error) {
		order = append(order, "handler")
		return nil, nil
	}), mw("a"), mw("b"))
	_, err := h.Handle(context.Background(), msg(1))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "handler"}, order)
}

func TestRecoverer_panicBecomesATransientError(t *testing.T) {
	h := bus.Recoverer(slog.New(slog.NewTextHandler(io.Discard, nil)))(bus.HandlerFunc(func(context.Context, *bus.Msg) ([]bus.Output, error) {
		panic("boom")
	}))
	outs, err := h.Handle(context.Background(), msg(1))
	require.Error(t, err)
	assert.Nil(t, outs)
	assert.Contains(t, err.Error(), "handler panic: boom")
	assert.False(t, bus.IsPermanent(err), "a panic is retried; it reaches the DLQ only after max_deliver")
	reason, _ := bus.RetryReason(err)
	assert.Equal(t, bus.ReasonPanic, reason, "counted apart from other retries")
}

func TestRetryReason_saysWhatKindOfFailureAHandlerSaw(t *testing.T) {
	base := errors.New("api server: 503")
	cases := map[string]struct {
		err       error
		reason    string
		after     time.Duration
		permanent bool
	}{
		"unclassified":           {base, bus.ReasonError, 0, false},
		"retry":                  {bus.Retry(base, "forbidden"), "forbidden", 0, false},
		"retry after":            {bus.RetryAfter(base, 3*time.Second, "throttled"), "throttled", 3 * time.Second, false},
		"wrapped retry":          {fmt.Errorf("writing request x: %w", bus.Retry(base, "timeout")), "timeout", 0, false},
		"outermost retry wins":   {bus.Retry(fmt.Errorf("publishing: %w", bus.Retry(base, "inner")), "outer"), "outer", 0, false},
		"permanent":              {bus.Permanent(base), bus.ReasonError, 0, true},
		"permanent inside retry": {bus.Retry(bus.Permanent(base), bus.ReasonPublish), bus.ReasonPublish, 0, true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			reason, after := bus.RetryReason(tc.err)
			assert.Equal(t, tc.reason, reason)
			assert.Equal(t, tc.after, after)
			assert.Equal(t, tc.permanent, bus.IsPermanent(tc.err), "a permanent error is dead-lettered however it is wrapped")
			assert.ErrorIs(t, tc.err, base, "the cause stays reachable")
			assert.Contains(t, tc.err.Error(), base.Error(), "the message says what failed")
		})
	}
	assert.NoError(t, bus.Retry(nil, "x"))
	assert.NoError(t, bus.RetryAfter(nil, time.Second, "x"))
}

func TestPropagateTrace_fillsOnlyWhatOutputsLeaveEmpty(t *testing.T) {
	in := msg(1)
	in.Header.Set(bus.HeaderTraceparent, "00-trace-in-01")
	in.Header.Set(bus.HeaderReceivedAt, "2030-01-02T03:04:05Z")
	own := nats.Header{}
	own.Set(bus.HeaderTraceparent, "00-trace-own-01")
	outs, err := bus.PropagateTrace(returning([]bus.Output{{Subject: "a"}, {Subject: "b", Header: own}}, nil)).Handle(context.Background(), in)
	require.NoError(t, err)
	assert.Equal(t, "00-trace-in-01", outs[0].Header.Get(bus.HeaderTraceparent))
	assert.Equal(t, "2030-01-02T03:04:05Z", outs[0].Header.Get(bus.HeaderReceivedAt))
	assert.Equal(t, "00-trace-own-01", outs[1].Header.Get(bus.HeaderTraceparent))
	assert.Equal(t, "2030-01-02T03:04:05Z", outs[1].Header.Get(bus.HeaderReceivedAt))
}

func TestPublish_storesOutputsOrFailsTheMessage(t *testing.T) {
	m := bus.NewMetrics(prometheus.NewRegistry())
	s := &sent{}
	outs, err := bus.Publish(s, "test", m)(returning([]bus.Output{{Subject: "a"}, {Subject: "b"}}, nil)).Handle(context.Background(), msg(1))
	require.NoError(t, err)
	assert.Nil(t, outs, "published outputs are not handed on")
	assert.Len(t, s.outs, 2)

	s = &sent{err: bus.ErrPublish}
	_, err = bus.Publish(s, "test", m)(returning([]bus.Output{{Subject: "a"}}, nil)).Handle(context.Background(), msg(1))
	assert.ErrorIs(t, err, bus.ErrPublish, "the input waits for a retry")

	s = &sent{}
	_, err = bus.Publish(s, "test", m)(returning([]bus.Output{{Subject: "a"}}, errors.New("store down"))).Handle(context.Background(), msg(1))
	assert.EqualError(t, err, "store down")
	assert.Empty(t, s.outs, "nothing is published for a failed message")
}

func TestDeadLetter_copiesWhatTheHandlerGaveUpOn(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	subj := bus.NewSubjects("p")
	cases := map[string]struct {
		err       error
		delivered uint64
		publish   error
		// reason is the DLQ reason; "" when the message is not
		// dead-lettered.
		reason string
	}{
		"permanent error":                {bus.Permanent(errors.New("bad json")), 1, nil, "bad json"},
		"transient error, retries left":  {errors.New("redis down"), 2, nil, ""},
		"transient error, last delivery": {errors.New("redis down"), 3, nil, "gave up after 3 deliveries: redis down"},
		"retry, retries left":            {bus.Retry(errors.New("forbidden"), "forbidden"), 2, nil, ""},
		// The server delivers it no more: without a copy it would be lost.
		"retry, last delivery": {bus.Retry(errors.New("forbidden"), "forbidden"), 3, nil, "gave up after 3 deliveries: forbidden"},
		"success":              {nil, 3, nil, ""},
		"DLQ copy not stored":  {bus.Permanent(errors.New("bad json")), 1, bus.ErrPublish, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := &sent{err: tc.publish}
			_, err := bus.DeadLetter(s, subj, "deduper", 3, log)(returning(nil, tc.err)).Handle(context.Background(), msg(tc.delivered))
			var dl *bus.DeadLettered
			if tc.reason == "" {
				assert.False(t, errors.As(err, &dl), "not dead-lettered: %v", err)
				assert.Empty(t, s.outs)
				if tc.publish != nil {
					assert.ErrorIs(t, err, bus.ErrPublish, "without its copy the message is retried, never dropped")
				}
				return
			}
			require.ErrorAs(t, err, &dl)
			assert.Equal(t, tc.reason, dl.Reason)
			require.Len(t, s.outs, 1)
			out := s.outs[0]
			assert.Equal(t, subj.DLQ("deduper"), out.Subject)
			assert.Equal(t, "payload", string(out.Data))
			assert.Equal(t, "dlq:deduper:P_SIGNALS:42", out.MsgID)
			assert.Empty(t, out.Header.Get(jetstream.MsgIDHeader), "the copy does not carry the input's msg-id")
			assert.Equal(t, "sig-1", out.Header.Get(bus.HeaderDLQMsgID), "a retry republishes under the input's msg-id")
			assert.Equal(t, "fp", out.Header.Get(bus.HeaderFingerprint))
			assert.Equal(t, tc.reason, out.Header.Get(bus.HeaderDLQReason))
			assert.Equal(t, "p.signals.alertmanager", out.Header.Get(bus.HeaderDLQSubject))
			assert.Equal(t, "42", out.Header.Get(bus.HeaderDLQSequence))
		})
	}
}
