package storm_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// The aggregator (worker, sweeper, batched Redis calls, coalescing waits)
// and the deduper beside it, having opened and closed a storm, leave no
// goroutine behind once they stopped and their process is closed.
func TestStage_runLeavesNoGoroutine(t *testing.T) {
	p := preparePipeline(t, nil)
	ignore := goleak.IgnoreCurrent()

	p.start()
	p.send(10*time.Millisecond, pods("KubePodCrashLooping", "shop", 0, 40)...)
	p.advance(time.Minute + time.Second)
	require.Len(t, p.read().closes(), 1, "the storm opened and the sweeper closed it")
	p.stop()
	// The test's own client and nats-server go too, so that what is left
	// can only be the stages' (the server runs goroutines for their
	// durable consumers for as long as it runs).
	p.pub.Close()
	p.conn.Close()
	p.nats.Stop()
	goleak.VerifyNone(t, ignore)
}
