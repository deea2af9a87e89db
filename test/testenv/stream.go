package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
)

// StoredMsg is one message read back from a stream.
type StoredMsg struct {
	Subject string
	Data    []byte
	Header  nats.Header
}

// ReadStream returns every message stored on stream under subjects, in
// stream order, through an ordered consumer (no durable state is left).
func ReadStream(t testing.TB, js jetstream.JetStream, stream string, subjects ...string) []StoredMsg {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	oc, release, err := bus.OpenReader(ctx, st, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	require.NoError(t, err)
	defer release()
	info, err := oc.Info(ctx)
	require.NoError(t, err)
	out := make([]StoredMsg, 0, info.NumPending)
	for uint64(len(out)) < info.NumPending {
		batch, err := oc.Fetch(int(min(info.NumPending-uint64(len(out)), 1000)), jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, StoredMsg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
		}
		require.NoError(t, batch.Error())
		require.Positive(t, n, "stream ran dry before its pending count")
	}
	return out
}

// WaitAcked waits until the durable consumer of stream has acked every
// message stored so far on subjects (on the whole stream when none is
// given). It compares the consumer's ack floor with the stream sequence
// of the last such message: a consumer's pending count is updated
// asynchronously after a publish is acknowledged, so "nothing pending"
// can be read before a message just stored reaches the consumer.
func WaitAcked(t testing.TB, js jetstream.JetStream, stream, durable string, within time.Duration, subjects ...string) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	var last uint64
	if len(subjects) == 0 {
		info, err := st.Info(ctx)
		require.NoError(t, err)
		last = info.State.LastSeq
	}
	for _, subj := range subjects {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err, "reading the last message on %s", subj)
		last = max(last, m.Sequence)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		cons, err := js.Consumer(ctx, stream, durable)
		require.NoError(c, err)
		info, err := cons.Info(ctx)
		require.NoError(c, err)
		assert.Zero(c, info.NumAckPending, "%s: messages delivered and not acked", durable)
		assert.GreaterOrEqual(c, info.AckFloor.Stream, last, "%s: acked up to sequence", durable)
	}, within, 5*time.Millisecond)
}

// WaitArchived waits until the archives of the pipeline under prefix hold
// everything its processing streams stored so far (bus.WaitArchived):
// the archives source asynchronously, and a review reads them.
func WaitArchived(t testing.TB, js jetstream.JetStream, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, bus.WaitArchived(ctx, js, prefix))
}

// ReadArchived returns every message stored on the processing stream
// under subjects, processed or not, from its archive (stream + _ARCHIVE)
// once the archive holds everything the stream stored so far.
func ReadArchived(t testing.TB, js jetstream.JetStream, stream string, subjects ...string) []StoredMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, bus.WaitStreamArchived(ctx, js, stream))
	return ReadStream(t, js, stream+"_ARCHIVE", subjects...)
}
