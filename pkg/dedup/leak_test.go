package dedup_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stormweir/stormweir/pkg/clock"
)

// A deduper replica that handled signals and stopped leaves no goroutine
// behind once its process is closed.
func TestStage_runLeavesNoGoroutine(t *testing.T) {
	p := newPipeline(t)
	store := localStore(t, clock.Real{})
	ignore := goleak.IgnoreCurrent()

	r := p.start(t, store)
	p.publish(t, firingSignals("leak", 200, 20)...)
	p.waitSettled(t, 200, 30*time.Second)
	r.stop()
	// The test's own client and nats-server go too, so that what is left
	// can only be the replica's (the server runs goroutines for the
	// replica's durable consumer for as long as it runs).
	p.pub.Close()
	p.conn.Close()
	p.nats.Stop()
	goleak.VerifyNone(t, ignore)
}
