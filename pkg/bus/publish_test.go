package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/bus/bustest"
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
