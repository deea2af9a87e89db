package storm

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Limits of scriptBatcher: pipelines in flight at once, and calls per
// pipeline.
const (
	maxPipelines = 4
	maxBatch     = 64
)

// scriptBatcher sends concurrent script calls together. A call that
// arrives while maxPipelines pipelines are in flight waits and leaves with
// the others that queued meanwhile, as one pipeline: a busy aggregator pays
// one round trip (one write and one read on each side) for many decisions
// instead of one per decision. An idle one sends each call at once; nothing
// waits for a timer. Every script stays atomic on its own; calls of one
// pipeline are as unordered as concurrent calls always were.
//
// The batcher has no goroutine of its own: callers send. A caller that
// finds a pipeline slot free sends the queue; when its pipeline is back it
// hands the slot to the first queued call, whose caller sends the next
// pipeline. So every Redis round trip runs in a handler's goroutine, which
// its stage's worker owns and waits for.
type scriptBatcher struct {
	c redis.UniversalClient

	mu    sync.Mutex
	queue []*scriptCall
	// slots counts pipeline slots taken: being sent, or handed to a
	// queued call's caller who has not sent yet.
	slots int
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	res    []any
	err    error
	done   chan struct{}
	// lead receives the slot handed to this call's caller. Under
	// scriptBatcher.mu: owed says a handed slot is not used yet (it sits
	// in lead), queued that the call waits in the queue.
	lead   chan struct{}
	owed   bool
	queued bool
}

// run runs script and returns its reply as an array. When ctx ends first
// the call may still run later, in another caller's pipeline; every
// batched script is idempotent.
func (b *scriptBatcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error) {
	c := &scriptCall{script: script, keys: keys, args: args, done: make(chan struct{}), lead: make(chan struct{}, 1), queued: true}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	free := b.slots < maxPipelines
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
			return c.res, c.err
		case <-c.lead:
			b.send(ctx, c)
		case <-ctx.Done():
			b.leave(c)
			return nil, ctx.Err()
		}
	}
}

// send sends one pipeline of queued calls on the slot self's caller holds,
// then hands the slot on. The pipeline carries other callers' calls, so
// it is not cut short when ctx ends (the client's timeouts bound it).
func (b *scriptBatcher) send(ctx context.Context, self *scriptCall) {
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
func (b *scriptBatcher) leave(c *scriptCall) {
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
func (b *scriptBatcher) passLocked() {
	for _, c := range b.queue {
		if !c.owed {
			c.owed = true
			c.lead <- struct{}{}
			return
		}
	}
	b.slots--
}

// exec runs one pipeline and releases its callers. A script Redis does
// not hold (first use, or a restart emptied its cache) is loaded and run
// on its own.
func (b *scriptBatcher) exec(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = c.script.Run(ctx, b.c, c.keys, c.args...).Slice()
		close(c.done)
		return
	}
	pipe := b.c.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range batch {
		c.res, c.err = cmds[i].Slice()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			c.res, c.err = c.script.Run(ctx, b.c, c.keys, c.args...).Slice()
		}
		if c.err == nil && c.res == nil {
			c.err = errors.New("empty reply from redis")
		}
		close(c.done)
	}
}
