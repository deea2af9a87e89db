package bus_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

func outputs(subject, idPrefix string, n int) []bus.Output {
	outs := make([]bus.Output, n)
	for i := range outs {
		outs[i] = bus.Output{Subject: subject, Data: []byte(strconv.Itoa(i)), MsgID: idPrefix + strconv.Itoa(i),
			Header: nats.Header{bus.HeaderSource: []string{"alertmanager"}}}
	}
	return outs
}

func TestPublish_storesEveryOutputWithItsMsgIDAndHeaders(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	res, err := e.pub.Publish(ctx, outputs(e.subj.Signals("alertmanager"), "a-", 50)...)
	require.NoError(t, err)
	assert.Zero(t, res.Duplicates)

	st, err := e.conn.JS.Stream(ctx, e.subj.StreamName(bus.StreamSignals))
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 50, info.State.Msgs)
	m, err := st.GetMsg(ctx, 7)
	require.NoError(t, err)
	assert.Equal(t, "6", string(m.Data))
	assert.Equal(t, "a-6", m.Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, "alertmanager", m.Header.Get(bus.HeaderSource))
}

func TestPublish_countsDuplicatesAbsorbedByMsgID(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	subj := e.subj.Signals("alertmanager")
	_, err := e.pub.Publish(ctx, outputs(subj, "d-", 30)...)
	require.NoError(t, err)

	// A retry of the first 30 with 10 new ones.
	res, err := e.pub.Publish(ctx, outputs(subj, "d-", 40)...)
	require.NoError(t, err)
	assert.Equal(t, 30, res.Duplicates)
	st, err := e.conn.JS.Stream(ctx, e.subj.StreamName(bus.StreamSignals))
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 40, info.State.Msgs)
}

func TestPublish_concurrentCallsEachGetTheirOwnAcks(t *testing.T) {
	e := newEnv(t, nil)
	subj := e.subj.Signals("alertmanager")
	// Every caller republishes the ids of caller 0, so each call's
	// duplicate count is its own: 0 for the first to store an id.
	_, err := e.pub.Publish(context.Background(), outputs(subj, "shared-", 20)...)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			outs := append(outputs(subj, "c"+strconv.Itoa(c)+"-", 100), outputs(subj, "shared-", 20)...)
			res, err := e.pub.Publish(context.Background(), outs...)
			assert.NoError(t, err)
			assert.Equal(t, 20, res.Duplicates)
		})
	}
	wg.Wait()
}

func TestPublish_withoutAStreamFails(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.pub.Publish(context.Background(), outputs("nostream.x", "n-", 3)...)
	require.ErrorIs(t, err, bus.ErrPublish)
	assert.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
}

func TestPublish_waitIsBoundedByTheTimeout(t *testing.T) {
	e := newEnv(t, nil)
	// A subscriber that never answers: the publish is delivered, no ack
	// ever comes.
	sub, err := e.conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	pub := bus.NewPublisher(e.conn.JS, 200*time.Millisecond)
	_, err = pub.Publish(context.Background(), outputs("silent.x", "s-", 2)...)
	require.ErrorIs(t, err, bus.ErrPublish)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// The Publisher still works afterwards, and a late reply is ignored.
	_, err = pub.Publish(context.Background(), outputs(e.subj.Signals("alertmanager"), "after-", 2)...)
	require.NoError(t, err)
}

func TestPublish_disconnectEndsTheWait(t *testing.T) {
	n := testenv.StartNATS(t)
	cfg := config.DefaultBus()
	cfg.URL = n.URL
	conn, err := bus.Connect(cfg, "bus-test", quiet())
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	sub, err := conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	require.NoError(t, conn.NC.Flush())
	_ = sub

	// A minute's timeout: only the disconnect can end this wait early,
	// and the error says which ended it.
	pub := bus.NewPublisher(conn.JS, time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := pub.Publish(context.Background(), outputs("silent.x", "s-", 5)...)
		done <- err
	}()
	msg, err := sub.NextMsg(10 * time.Second) // the publish is out
	require.NoError(t, err)
	require.NotNil(t, msg)
	n.Stop()
	err = <-done
	require.ErrorIs(t, err, bus.ErrPublish)
	assert.ErrorIs(t, err, nats.ErrDisconnected)
}
