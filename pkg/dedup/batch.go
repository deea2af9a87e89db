package dedup

import (
	"context"
	"maps"

	"github.com/stormweir/stormweir/pkg/batch"
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
// The queueing is pkg/batch's: callers send, so every store call runs in
// a handler's goroutine, which the stage's worker owns and waits for.
type batcher struct {
	// decide decides one batch; output builds a decision's event.
	decide func(ctx context.Context, reqs []record.DecideRequest) []record.DecideResponse
	output func(c *call) (bus.Output, bool, error)

	q *batch.Batcher[*call]
}

// newBatcher returns a batcher deciding through decide and building
// events with output.
func newBatcher(decide func(ctx context.Context, reqs []record.DecideRequest) []record.DecideResponse, output func(c *call) (bus.Output, bool, error)) *batcher {
	b := &batcher{decide: decide, output: output}
	b.q = batch.New(maxBatches, maxBatch, b.exec)
	return b
}

// run decides c and sets its result and event. When ctx ends first it
// returns ctx's error and c must not be read: c may still be decided
// later, in another caller's batch; decisions are idempotent per msg-id,
// so the redelivery of c's message finds it.
func (b *batcher) run(ctx context.Context, c *call) error { return b.q.Do(ctx, c) }

// call is one signal waiting for its decision and event.
type call struct {
	sig   *signal.Head
	msgID string
	in    *bus.Msg

	res record.Result
	err error
	// out is the event covering this decision (its own or its group's
	// newest); ok is false when the decision publishes nothing.
	out bus.Output
	ok  bool
}

// group is the fresh decisions of one batch on one incident's subject.
type group struct{ incident, subject string }

// exec decides batch, builds each decision's event, gives every fresh
// decision the event of its group's newest revision, and releases the
// callers.
func (b *batcher) exec(ctx context.Context, batch []*call) {
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
