package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
)

// TestOpenReader_releaseLeavesNoConsumer: every read's consumer is gone
// from the server once released, so readers that poll (the review pages,
// replay in a loop) never reach the stream's consumer limit; and a reader
// whose release never ran is dropped after a short inactive threshold.
func TestOpenReader_releaseLeavesNoConsumer(t *testing.T) {
	e := newEnv(t, nil)
	e.publishInputs(3)
	ctx := context.Background()
	// Reviews read the archive, which no stage consumes.
	require.NoError(t, bus.WaitArchived(ctx, e.conn.JS, e.cfg.Prefix))
	st, err := e.conn.JS.Stream(ctx, e.subj.StreamName(bus.StreamSignalsArchive))
	require.NoError(t, err)
	for range 5 {
		cons, release, err := bus.OpenReader(ctx, st, jetstream.OrderedConsumerConfig{})
		require.NoError(t, err)
		info, err := cons.Info(ctx)
		require.NoError(t, err)
		require.NotZero(t, info.Config.InactiveThreshold)
		require.LessOrEqual(t, info.Config.InactiveThreshold, time.Minute, "a reader never released is dropped soon")
		batch, err := cons.Fetch(3)
		require.NoError(t, err)
		n := 0
		for range batch.Messages() {
			n++
		}
		require.Equal(t, 3, n)
		release()
		// An ordered consumer that reset itself (a missed heartbeat on a
		// loaded machine) deletes the consumer before in the background.
		require.Eventually(t, func() bool {
			si, err := st.Info(ctx)
			return err == nil && si.State.Consumers == 0
		}, 10*time.Second, 20*time.Millisecond, "the released reader's consumer is deleted")
	}
}
