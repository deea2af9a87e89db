package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// TestEnsureStreams_fullStreamRefusesAndKeepsWhatItHolds: a signals
// stream of 8 messages with no stage reading it refuses the ninth
// (IsFull) and keeps the eight; once the deduper's consumer and the
// archive have acknowledged them they leave it, the archive keeps them,
// and the stream takes new messages again.
func TestEnsureStreams_fullStreamRefusesAndKeepsWhatItHolds(t *testing.T) {
	e := newEnv(t, func(c *config.Bus) { c.Signals.MaxMsgs = 8 })
	ctx := context.Background()
	stream := e.subj.StreamName(bus.StreamSignals)
	e.publishInputs(8)
	_, err := e.pub.Publish(ctx, bus.Output{Subject: e.subj.Signals("alertmanager"), Data: []byte("9"), MsgID: "in-9"})
	require.Error(t, err)
	assert.True(t, bus.IsFull(err), "%v", err)
	st, err := e.conn.JS.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(8), info.State.Msgs, "the stream keeps what it holds")
	assert.Equal(t, uint64(1), info.State.FirstSeq)

	cons, err := e.conn.JS.Consumer(ctx, stream, bus.ConsumerDeduper)
	require.NoError(t, err, "the deduper's consumer exists with the stream")
	batch, err := cons.Fetch(8, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	for m := range batch.Messages() {
		require.NoError(t, m.Ack())
	}
	require.NoError(t, bus.WaitArchived(ctx, e.conn.JS, e.cfg.Prefix))
	require.Eventually(t, func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond, "processed and archived messages leave the stream")
	archive := testenv.ReadStream(t, e.conn.JS, e.subj.StreamName(bus.StreamSignalsArchive))
	assert.Len(t, archive, 8, "the archive keeps them")
	_, err = e.pub.Publish(ctx, bus.Output{Subject: e.subj.Signals("alertmanager"), Data: []byte("9"), MsgID: "in-9"})
	assert.NoError(t, err, "room again")
}

// TestEnsureStreams_refusesAStreamOfAnEarlierVersion: a signals stream
// with limits retention (as versions without archives made it) is not
// touched; the error names it and says what to do.
func TestEnsureStreams_refusesAStreamOfAnEarlierVersion(t *testing.T) {
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL).Bus
	conn, err := bus.Connect(cfg, "bus-test", quiet())
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	ctx := context.Background()
	old := bus.StreamConfigs(cfg)[0]
	old.Retention, old.Discard = jetstream.LimitsPolicy, jetstream.DiscardOld
	_, err = conn.JS.CreateStream(ctx, old)
	require.NoError(t, err)

	for name, call := range map[string]func(context.Context, jetstream.JetStream, config.Bus) error{
		"EnsureStreams": bus.EnsureStreams, "CheckStreams": bus.CheckStreams,
	} {
		err = call(ctx, conn.JS, cfg)
		var re *bus.RetentionError
		require.True(t, errors.As(err, &re), "%s: %v", name, err)
		assert.Equal(t, old.Name, re.Stream)
		assert.Contains(t, err.Error(), "stream "+old.Name+" has limits retention and this stormweir needs interest")
		assert.Contains(t, err.Error(), "nats stream rm "+old.Name)
	}
	st, err := conn.JS.Stream(ctx, old.Name)
	require.NoError(t, err)
	assert.Equal(t, jetstream.LimitsPolicy, st.CachedInfo().Config.Retention, "left as it was")
}
