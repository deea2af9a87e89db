package storm

import (
	"context"
	"errors"
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
type scriptBatcher struct {
	c redis.UniversalClient

	mu       sync.Mutex
	queue    []*scriptCall
	inflight int
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	res    []any
	err    error
	done   chan struct{}
}

// run runs script and returns its reply as an array. When ctx ends first
// the call may still run later; every batched script is idempotent.
func (b *scriptBatcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error) {
	c := &scriptCall{script: script, keys: keys, args: args, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	start := b.inflight < maxPipelines
	if start {
		b.inflight++
	}
	b.mu.Unlock()
	if start {
		go b.drain()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// drain sends queued calls until none are left.
func (b *scriptBatcher) drain() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatch)
		if n == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		batch := make([]*scriptCall, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.mu.Unlock()
		b.send(batch)
	}
}

// send runs one pipeline. A script Redis does not hold (first use, or a
// restart emptied its cache) is loaded and run on its own.
func (b *scriptBatcher) send(batch []*scriptCall) {
	ctx := context.Background()
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
