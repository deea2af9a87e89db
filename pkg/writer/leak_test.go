package writer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// A writer that created a request, wrote a coalesced status update and
// ended an incident through its terminal-phase watcher leaves no
// goroutine behind once it stopped and its process is closed: not its
// worker, coalescer, flushes, informer cache or work queue.
func TestWriter_runLeavesNoGoroutine(t *testing.T) {
	h := prepareWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	ignore := goleak.IgnoreCurrent()

	h.start()
	ctx := context.Background()
	sig := testSignal(fingerprintOf("leak-"+h.id), "x", ns, signal.SeverityWarning)
	e := h.newIndividual(sig, "m1")
	h.open(e)
	h.waitAcked(1, 10*time.Second)
	h.updates(e, e.Revision+1, e.Revision+1)
	st := h.settle()
	require.Equal(t, 1, st.pending)
	h.advanceTo(st.next)
	require.EqualValues(t, 2, h.acked(), "the update was written")
	require.NoError(t, setPhase(ctx, ns, RequestName(e.IncidentID), "Completed"))
	require.Eventually(t, func() bool {
		_, err := h.store.Get(ctx, sig.Fingerprint)
		return errors.Is(err, record.ErrNotFound)
	}, 10*time.Second, 10*time.Millisecond, "the terminal phase ended the incident")

	h.stop()
	// The test's nats-server goes too, so that what is left can only be
	// the writer's.
	h.nats.Stop()
	goleak.VerifyNone(t, ignore)
}
