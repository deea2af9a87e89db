package batch

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestBatcher_everyItemOnceAndEverySlotBack: concurrent callers, some of
// whom give up before their item is sent, each get their item executed
// at most once (exactly once for those who waited), in batches no larger
// than the limit; afterwards
// every slot is free and the queue empty: the callers' goroutines did all
// the sending.
func TestBatcher_everyItemOnceAndEverySlotBack(t *testing.T) {
	const callers, inFlight, limit = 2000, 4, 16
	var (
		mu   sync.Mutex
		runs = map[int]int{}
	)
	b := New(inFlight, limit, func(_ context.Context, items []*int) {
		mu.Lock()
		defer mu.Unlock()
		assert.LessOrEqual(t, len(items), limit)
		for _, it := range items {
			runs[*it]++
		}
	})
	var wg sync.WaitGroup
	gaveUp := make([]bool, callers)
	for i := range callers {
		wg.Go(func() {
			ctx := context.Background()
			if i%7 == 0 {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			item := i
			if err := b.Do(ctx, &item); err != nil {
				gaveUp[i] = true
			}
		})
	}
	wg.Wait()
	for i := range callers {
		if gaveUp[i] {
			assert.LessOrEqual(t, runs[i], 1, "item %d", i)
			continue
		}
		assert.Equal(t, 1, runs[i], "item %d executed once", i)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	assert.Zero(t, b.slots, "every slot is free again")
	assert.Empty(t, b.queue)
}
