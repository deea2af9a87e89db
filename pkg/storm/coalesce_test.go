package storm

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
)

func encodeRev(calls *int) func(*Snapshot) (bus.Output, error) {
	return func(s *Snapshot) (bus.Output, error) {
		*calls++
		h := nats.Header{}
		h.Set(bus.HeaderIncident, s.ID)
		return bus.Output{MsgID: s.ID + ":" + time.Duration(s.Revision).String(), Header: h}, nil
	}
}

func TestCoalescer_decisionsInFlightPublishTheNewestRevisionOnce(t *testing.T) {
	c := newCoalescer(clock.Real{})
	a, b, other := c.enter(), c.enter(), c.enter()
	upToA := c.done(a, &Snapshot{ID: "s1", Revision: 3})
	c.done(other, &Snapshot{ID: "s2", Revision: 9})
	settled, _ := c.settled(upToA)
	assert.False(t, settled, "b was in flight when a finished")
	c.done(b, &Snapshot{ID: "s1", Revision: 5})
	settled, _ = c.settled(upToA)
	assert.True(t, settled)

	calls := 0
	outA, err := c.output(&Snapshot{ID: "s1", Revision: 3}, encodeRev(&calls))
	require.NoError(t, err)
	outB, err := c.output(&Snapshot{ID: "s1", Revision: 5}, encodeRev(&calls))
	require.NoError(t, err)
	assert.Equal(t, "s1:5ns", outA.MsgID, "a publishes the revision that covers it")
	assert.Equal(t, outA.MsgID, outB.MsgID)
	assert.Equal(t, 1, calls, "encoded once per revision")
	outA.Header.Set(bus.HeaderTraceparent, "a")
	assert.Empty(t, outB.Header.Get(bus.HeaderTraceparent), "each caller owns its header")

	for _, tk := range []uint64{a, b, other} {
		c.release(tk)
	}
	// Once every decision is out, nothing is remembered: a redelivery
	// publishes what its own decision returns.
	d := c.enter()
	c.done(d, &Snapshot{ID: "s1", Revision: 4})
	out, err := c.output(&Snapshot{ID: "s1", Revision: 4}, encodeRev(&calls))
	require.NoError(t, err)
	assert.Equal(t, "s1:4ns", out.MsgID)
	c.release(d)
}

func TestCoalescer_waitsOnlyForDecisionsInFlightWhenItFinished(t *testing.T) {
	c := newCoalescer(clock.Real{})
	a, b := c.enter(), c.enter()
	upTo := c.done(a, &Snapshot{ID: "s1", Revision: 1})
	late := c.enter()
	settled, changed := c.settled(upTo)
	require.False(t, settled)
	c.done(b, &Snapshot{ID: "s1", Revision: 2})
	select {
	case <-changed:
	default:
		t.Fatal("a finishing neighbour wakes the waiters")
	}
	settled, _ = c.settled(upTo)
	assert.True(t, settled, "a ticket taken after a finished is not waited for")
	c.wait(context.Background(), upTo)
	for _, tk := range []uint64{a, b, late} {
		c.release(tk)
	}
}

func TestCoalescer_waitForANeighbourEndsAtMaxCoalesceWaitOnTheClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clk := clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	c := newCoalescer(clk)
	a, stuck := c.enter(), c.enter()
	upTo := c.done(a, &Snapshot{ID: "s1", Revision: 1})
	returned := make(chan struct{})
	go func() {
		c.wait(ctx, upTo)
		close(returned)
	}()
	require.NoError(t, clk.BlockUntil(ctx, 1), "the wait arms its bound")

	clk.Advance(maxCoalesceWait - time.Millisecond)
	assert.Equal(t, 1, clk.Waiters(), "the bound has not fired 1ms before it")
	clk.Advance(time.Millisecond)
	select {
	case <-returned:
	case <-ctx.Done():
		t.Fatal("the wait did not end when the clock reached maxCoalesceWait")
	}
	assert.Zero(t, clk.Waiters(), "the bound fired")
	c.release(a)
	c.release(stuck)
}
