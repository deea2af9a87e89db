package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/bus/bustest"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

func TestPublisher_conformance(t *testing.T) {
	bustest.Run(t, func(t testing.TB, conn *bus.Conn, timeout time.Duration) bus.Sender {
		p := bus.NewPublisher(conn.JS, timeout)
		t.Cleanup(p.Close)
		return p
	})
}

func TestPublisher_closeEndsEveryWait(t *testing.T) {
	e := newEnv(t, nil)
	sub, err := e.conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	pub := bus.NewPublisher(e.conn.JS, time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := pub.Publish(context.Background(), bus.Output{Subject: "silent.x", Data: []byte("x")})
		done <- err
	}()
	_, err = sub.NextMsg(10 * time.Second) // the publish is out, waiting for its ack
	require.NoError(t, err)
	pub.Close()
	require.ErrorIs(t, <-done, bus.ErrPublish, "a wait in flight ends at Close")
	_, err = pub.Publish(context.Background(), bus.Output{Subject: e.subj.Signals("alertmanager"), Data: []byte("x")})
	require.Error(t, err, "a closed publisher publishes nothing")
	pub.Close() // twice is harmless
}

// TestPublisher_sameMsgIDInFlightSentOnce: a call publishing an output
// (same subject, same msg-id) that another call has on the connection
// does not send it again: it returns once the first one's ack is in, and
// counts it as a duplicate.
func TestPublisher_sameMsgIDInFlightSentOnce(t *testing.T) {
	e := newEnv(t, nil)
	sub, err := e.conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	pub := bus.NewPublisher(e.conn.JS, time.Minute)
	t.Cleanup(pub.Close)
	out := bus.Output{Subject: "silent.x", Data: []byte("x"), MsgID: "same"}
	type result struct {
		res bus.PublishResult
		err error
	}
	publish := func() chan result {
		ch := make(chan result, 1)
		go func() {
			res, err := pub.Publish(context.Background(), out)
			ch <- result{res, err}
		}()
		return ch
	}

	first := publish()
	m, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.InFlight(pub, "silent.x", "same") }, 10*time.Second, time.Millisecond)
	second := publish()
	require.Eventually(t, func() bool { return bus.Joined(pub) == 1 }, 10*time.Second, time.Millisecond)

	// The one ack the stream would send, for the one message sent.
	require.NoError(t, m.Respond([]byte(`{"stream":"SILENT","seq":1}`)))
	r1, r2 := <-first, <-second
	require.NoError(t, r1.err)
	require.NoError(t, r2.err)
	assert.Zero(t, r1.res.Duplicates)
	assert.Equal(t, 1, r2.res.Duplicates, "the second call's output was stored by the first")
	require.NoError(t, e.conn.NC.Flush())
	n, _, err := sub.Pending()
	require.NoError(t, err)
	assert.Zero(t, n, "sent once")
	assert.False(t, bus.InFlight(pub, "silent.x", "same"), "forgotten once its call returned")
}

// TestPublisher_joinedPublishFailsWithTheFirst: a call waiting for
// another call's publish of its output fails when that one fails, so its
// input is retried.
func TestPublisher_joinedPublishFailsWithTheFirst(t *testing.T) {
	e := newEnv(t, nil)
	sub, err := e.conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	pub := bus.NewPublisher(e.conn.JS, time.Minute)
	t.Cleanup(pub.Close)
	out := bus.Output{Subject: "silent.x", Data: []byte("x"), MsgID: "same"}
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { _, err := pub.Publish(context.Background(), out); first <- err }()
	m, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.InFlight(pub, "silent.x", "same") }, 10*time.Second, time.Millisecond)
	go func() { _, err := pub.Publish(context.Background(), out); second <- err }()
	require.Eventually(t, func() bool { return bus.Joined(pub) == 1 }, 10*time.Second, time.Millisecond)

	require.NoError(t, m.Respond([]byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"SILENT","seq":0}`)))
	require.ErrorIs(t, <-first, bus.ErrPublish)
	require.ErrorIs(t, <-second, bus.ErrPublish)
}

// TestOutput_sizeIsWhatTheMaxPayloadCounts publishes, to a server with
// a 2 KiB max payload, a message whose Size is exactly the max payload
// (stored) and one a byte larger (refused by the client): Size counts
// what the client counts, headers and the Nats-Msg-Id included.
func TestOutput_sizeIsWhatTheMaxPayloadCounts(t *testing.T) {
	const maxPayload = 2048
	n := testenv.StartNATSWith(t, &server.Options{ServerName: "small-payload", MaxPayload: maxPayload})
	cfg := config.DefaultBus()
	cfg.URL = n.URL
	conn, err := bus.Connect(cfg, "bus-test", quiet())
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(context.Background(), conn.JS, cfg))
	pub := bus.NewPublisher(conn.JS, 5*time.Second)
	t.Cleanup(pub.Close)
	require.EqualValues(t, maxPayload, pub.MaxPayload())

	subj := bus.NewSubjects(cfg.Prefix).Signals("alertmanager")
	out := func(id string, dataLen int) bus.Output {
		return bus.Output{Subject: subj, MsgID: id, Data: []byte(strings.Repeat("x", dataLen)),
			Header: nats.Header{bus.HeaderSource: {"alertmanager"}, bus.HeaderFingerprint: {"fp"}}}
	}
	fits := out("fits", 0)
	fits = out("fits", maxPayload-fits.Size())
	require.Equal(t, maxPayload, fits.Size())
	_, err = pub.Publish(context.Background(), fits)
	require.NoError(t, err, "a message of exactly the max payload is stored")

	over := out("over", len(fits.Data)+1) // an id of the same length
	require.Equal(t, maxPayload+1, over.Size())
	_, err = pub.Publish(context.Background(), over)
	require.ErrorIs(t, err, nats.ErrMaxPayload, "one byte more is refused")
}
