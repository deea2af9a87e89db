package storm

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
)

// maxCoalesceWait bounds how long a decision waits for the decisions that
// were in flight beside it before it publishes.
const maxCoalesceWait = 25 * time.Millisecond

// coalescer lets the storm events of concurrent decisions converge on one
// revision. Every handled message takes a ticket while its store calls
// run; a decision that changed a storm then waits for the tickets taken
// before it finished (its neighbours of the same fetch, typically answered
// by the same Redis pipeline) and publishes the newest revision of the
// storm any of them saw. Events carry absolute values, so that revision
// includes every waiting decision's effect; all of them publish the same
// event under the same msg-id, which JetStream stores once, so the writer
// gets one event per wave instead of one per member. Each message is still
// acked only after its own publish of an event that covers it, and a
// redelivery publishes again. The event is encoded once per revision.
//
// Nothing here is state a decision depends on: waves exist only while
// their messages are in flight. The wait is bounded on the stage's clock,
// like every other wait of the stage's logic.
type coalescer struct {
	clk     clock.Clock
	mu      sync.Mutex
	next    uint64              // tickets issued
	open    map[uint64]struct{} // tickets whose store calls still run
	users   int                 // tickets not yet released
	newest  map[string]*wave    // by storm id
	changed chan struct{}       // closed and replaced when a ticket finishes
}

// wave is the newest revision of one storm seen by decisions in flight,
// with its event once encoded.
type wave struct {
	snap Snapshot
	out  *bus.Output
}

func newCoalescer(clk clock.Clock) *coalescer {
	return &coalescer{clk: clk, open: map[uint64]struct{}{}, newest: map[string]*wave{}, changed: make(chan struct{})}
}

// enter takes a ticket before a message's store calls; release must
// follow.
func (c *coalescer) enter() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.next
	c.next++
	c.open[t] = struct{}{}
	c.users++
	return t
}

// done marks ticket t's store calls finished, records snap (nil when it
// changed no storm) and returns the tickets issued so far, which are the
// ones a coalesced publish waits for.
func (c *coalescer) done(t uint64, snap *Snapshot) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(t)
	if snap != nil && snap.ID != "" {
		if w := c.newest[snap.ID]; w == nil || snap.Revision > w.snap.Revision {
			c.newest[snap.ID] = &wave{snap: *snap}
		}
	}
	return c.next
}

// release returns ticket t; the last one out forgets the waves.
func (c *coalescer) release(t uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(t)
	if c.users--; c.users == 0 {
		clear(c.newest)
	}
}

// finishLocked closes ticket t if it is open and wakes the waiters; c.mu
// held.
func (c *coalescer) finishLocked(t uint64) {
	if _, ok := c.open[t]; ok {
		delete(c.open, t)
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// settled reports whether no ticket below upTo is still open.
func (c *coalescer) settled(upTo uint64) (bool, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.open {
		if t < upTo {
			return false, c.changed
		}
	}
	return true, nil
}

// wait returns once the tickets below upTo have finished, ctx ended or
// maxCoalesceWait passed.
func (c *coalescer) wait(ctx context.Context, upTo uint64) {
	var timeout <-chan time.Time
	for {
		ok, changed := c.settled(upTo)
		if ok {
			return
		}
		if timeout == nil {
			tm := c.clk.NewTimer(maxCoalesceWait)
			defer tm.Stop()
			timeout = tm.C()
		}
		select {
		case <-changed:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
}

// output returns the event of the newest revision of the storm seen in
// flight (snap itself if none is newer), encoding it once per revision.
// The header is the caller's own copy: the worker adds the message's
// trace context to it.
func (c *coalescer) output(snap *Snapshot, encode func(*Snapshot) (bus.Output, error)) (bus.Output, error) {
	c.mu.Lock()
	w := c.newest[snap.ID]
	if w == nil || w.snap.Revision < snap.Revision {
		w = &wave{snap: *snap}
		c.newest[snap.ID] = w
	}
	out := w.out
	best := w.snap
	c.mu.Unlock()
	if out == nil {
		o, err := encode(&best)
		if err != nil {
			return bus.Output{}, err
		}
		c.mu.Lock()
		if w.out == nil {
			w.out = &o
		}
		out = w.out
		c.mu.Unlock()
	}
	o := *out
	// Header values are replaced, never changed in place (Header.Set),
	// so a copy of the map is enough.
	o.Header = maps.Clone(out.Header)
	return o, nil
}
