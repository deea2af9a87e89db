package storm

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/batch"
)

// Limits of scriptBatcher: pipelines in flight at once, and calls per
// pipeline.
const (
	maxPipelines = 4
	maxBatch     = 64
)

// scriptBatcher sends concurrent script calls together. A call that
// arrives while maxPipelines pipelines are in flight waits and leaves with
// the others that queued meanwhile, as one pipeline (pkg/batch): a busy
// aggregator pays one round trip (one write and one read on each side)
// for many decisions instead of one per decision. An idle one sends each
// call at once; nothing waits for a timer. Every script stays atomic on
// its own; calls of one pipeline are as unordered as concurrent calls
// always were. Callers send, so every Redis round trip runs in a
// handler's goroutine, which its stage's worker owns and waits for.
type scriptBatcher struct {
	c redis.UniversalClient
	q *batch.Batcher[*scriptCall]
}

// newScriptBatcher returns a batcher running scripts on c.
func newScriptBatcher(c redis.UniversalClient) *scriptBatcher {
	b := &scriptBatcher{c: c}
	b.q = batch.New(maxPipelines, maxBatch, b.exec)
	return b
}

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	res    []any
	err    error
}

// run runs script and returns its reply as an array. When ctx ends first
// the call may still run later, in another caller's pipeline; every
// batched script is idempotent.
func (b *scriptBatcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) ([]any, error) {
	c := &scriptCall{script: script, keys: keys, args: args}
	if err := b.q.Do(ctx, c); err != nil {
		return nil, err
	}
	return c.res, c.err
}

// exec runs one pipeline and sets each call's reply. A script Redis does
// not hold (first use, or a restart emptied its cache) is loaded and run
// on its own.
func (b *scriptBatcher) exec(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = c.script.Run(ctx, b.c, c.keys, c.args...).Slice()
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
	}
}
