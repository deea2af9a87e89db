package writer

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func pending(subject string, rev int64) *pendingMutation {
	return &pendingMutation{update: update{subject: subject, rev: rev}, done: make(chan struct{})}
}

func TestCoalescer_matchLocked(t *testing.T) {
	co := &coalescer{m: newMetrics(prometheus.NewRegistry())}
	waiting, flying := pending("a", 5), pending("b", 5)
	e := &entry{pending: []*pendingMutation{waiting}, inflight: []*pendingMutation{flying}}

	same, stale := co.matchLocked(e, update{subject: "a", rev: 5})
	assert.Same(t, waiting, same, "the same revision is the same message again: it waits with the first delivery")
	assert.False(t, stale)

	same, stale = co.matchLocked(e, update{subject: "b", rev: 5})
	assert.Same(t, flying, same, "also while that write is in flight")
	assert.False(t, stale)

	same, stale = co.matchLocked(e, update{subject: "a", rev: 4})
	assert.Nil(t, same)
	assert.True(t, stale, "an older revision than a pending one is stale")
	same, stale = co.matchLocked(e, update{subject: "b", rev: 3})
	assert.Nil(t, same)
	assert.True(t, stale, "an older revision than an in-flight one is stale")

	same, stale = co.matchLocked(e, update{subject: "c", rev: 1})
	assert.Nil(t, same)
	assert.False(t, stale, "another subject is independent")

	same, stale = co.matchLocked(e, update{subject: "a", rev: 6})
	assert.Nil(t, same)
	assert.False(t, stale)
	require.Empty(t, e.pending, "the older pending update is dropped")
	select {
	case <-waiting.done:
		assert.True(t, waiting.res.superseded, "and released as superseded")
	default:
		t.Fatal("the superseded update's caller was not released")
	}
	same, stale = co.matchLocked(e, update{subject: "b", rev: 6})
	assert.Nil(t, same)
	assert.False(t, stale, "an in-flight write is never superseded: the newer update queues behind it")
	select {
	case <-flying.done:
		t.Fatal("an in-flight update must wait for its write")
	default:
	}
}
