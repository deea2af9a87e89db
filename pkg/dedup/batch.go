package dedup

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Limits of the batcher: batches in flight at once, and signals per
// batch.
const (
	maxBatches = 4
	maxBatch   = 128
)

// batcher decides concurrent signals together and coalesces their
// events. A signal that arrives while maxBatches batches are in flight
// waits and leaves with the others that queued meanwhile, as one batch:
// with a store that decides batches (record.BatchDecider, the Redis
// store's pipeline) a busy deduper pays one round trip for many decisions
// instead of one each. An idle one sends each signal at once; nothing
// waits for a timer.
//
// Coalescing: events carry absolute values and a revision, so of the
// fresh decisions of one batch on one incident (and so one subject), the
// event of the newest revision carries every other's effect. Every
// signal of the group returns that one event, under the newest
// decision's msg-id, so the bus stores it once (the process's Publisher
// sends an event whose msg-id is in flight once; JetStream's duplicate
// window absorbs a later copy) and the next stage gets one message per
// incident and batch instead of one per signal. Each signal is still
// acked only after the publish of an event that covers it is stored, and
// a failed publish leaves every signal of the group to be redelivered.
//
// Only fresh decisions coalesce: a redelivered signal (Result.Duplicate)
// republishes its own event under its own msg-id, as before. Its msg-id
// may already be stored, with older values, so an event under it could
// be dropped by the duplicate window and must never be what covers a
// fresh decision.
//
// The batcher has no goroutine of its own: callers send. A caller that
// finds a slot free sends the queue; when its batch is decided it hands
// the slot to the first queued signal, whose caller sends the next batch.
// So every store call runs in a handler's goroutine, which the stage's
// worker owns and waits for.
type batcher struct {
	// decide decides one batch; output builds a decision's event.
	decide func(ctx context.Context, reqs []record.DecideRequest) []record.DecideResponse
	output func(c *call) (bus.Output, bool, error)

	mu    sync.Mutex
	queue []*call
	// slots counts batch slots taken: being sent, or handed to a queued
	// call's caller who has not sent yet.
	slots int
}

// call is one signal waiting for its decision and event.
type call struct {
	sig   *signal.Head
	msgID string
	in    *bus.Msg

	res record.Result
	err error
	// out is the event covering this decision (its own or its group's
	// newest); ok is false when the decision publishes nothing.
	out  bus.Output
	ok   bool
	done chan struct{}
	// lead receives the slot handed to this call's caller. Under
	// batcher.mu: owed says a handed slot is not used yet (it sits in
	// lead), queued that the call waits in the queue.
	lead   chan struct{}
	owed   bool
	queued bool
}

// run decides c and sets its result and event. When ctx ends first it
// returns ctx's error and c must not be read: c may still be decided
// later, in another caller's batch; decisions are idempotent per msg-id,
// so the redelivery of c's message finds it.
func (b *batcher) run(ctx context.Context, c *call) error {
	c.done, c.lead, c.queued = make(chan struct{}), make(chan struct{}, 1), true
	b.mu.Lock()
	b.queue = append(b.queue, c)
	free := b.slots < maxBatches
	if free {
		b.slots++
	}
	b.mu.Unlock()
	if free {
		b.send(ctx, c)
	}
	for {
		select {
		case <-c.done:
			b.leave(c)
			return nil
		case <-c.lead:
			b.send(ctx, c)
		case <-ctx.Done():
			b.leave(c)
			return ctx.Err()
		}
	}
}

// send decides one batch of queued calls on the slot self's caller holds,
// then hands the slot on. The batch carries other callers' signals, so
// it is not cut short when ctx ends (the store client's timeouts bound
// it).
func (b *batcher) send(ctx context.Context, self *call) {
	b.mu.Lock()
	self.owed = false
	n := min(len(b.queue), maxBatch)
	batch := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	for _, c := range batch {
		c.queued = false
	}
	b.mu.Unlock()
	if n > 0 {
		b.exec(context.WithoutCancel(ctx), batch)
	}
	b.mu.Lock()
	b.passLocked()
	b.mu.Unlock()
}

// leave ends the wait of c's caller: c leaves the queue if it is still
// there, and a slot handed to it and not used is passed on.
func (b *batcher) leave(c *call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.queued {
		i := slices.Index(b.queue, c)
		b.queue = slices.Delete(b.queue, i, i+1)
		c.queued = false
	}
	if c.owed {
		<-c.lead // owed: the slot sits in lead, and only c's caller takes it
		c.owed = false
		b.passLocked()
	}
}

// passLocked hands a freed slot to the first queued call that has none,
// or frees it when none waits. b.mu held.
func (b *batcher) passLocked() {
	for _, c := range b.queue {
		if !c.owed {
			c.owed = true
			c.lead <- struct{}{}
			return
		}
	}
	b.slots--
}

// group is the fresh decisions of one batch on one incident's subject.
type group struct{ incident, subject string }

// exec decides batch, builds each decision's event, gives every fresh
// decision the event of its group's newest revision, and releases the
// callers.
func (b *batcher) exec(ctx context.Context, batch []*call) {
	defer func() {
		for _, c := range batch {
			close(c.done)
		}
	}()
	reqs := make([]record.DecideRequest, len(batch))
	for i, c := range batch {
		reqs[i] = record.DecideRequest{Sig: c.sig, MsgID: c.msgID}
	}
	resps := b.decide(ctx, reqs)
	newest := map[group]*call{}
	for i, c := range batch {
		c.res, c.err = resps[i].Result, resps[i].Err
		if c.err != nil {
			continue
		}
		if c.out, c.ok, c.err = b.output(c); c.err != nil || !c.ok || c.res.Duplicate {
			continue
		}
		g := group{c.res.Record.IncidentID, c.out.Subject}
		if n := newest[g]; n == nil || c.res.Record.Revision > n.res.Record.Revision {
			newest[g] = c
		}
	}
	if len(newest) == len(batch) {
		return
	}
	for _, c := range batch {
		if c.err != nil || !c.ok || c.res.Duplicate {
			continue
		}
		n := newest[group{c.res.Record.IncidentID, c.out.Subject}]
		if n == c {
			continue
		}
		c.out = n.out
		// Every caller gets its own header: the worker adds the trace
		// context of its message. Values are replaced, never changed in
		// place (Header.Set), so a copy of the map is enough.
		c.out.Header = maps.Clone(n.out.Header)
	}
}
