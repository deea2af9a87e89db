package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
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
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	require.NoError(t, err)
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
