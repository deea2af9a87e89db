// Package batch lets concurrent callers share round trips to a store: an
// item that arrives while the batcher's slots are all in flight waits,
// and leaves with the others that queued meanwhile, as one batch. A busy
// stage pays one round trip for many items instead of one each; an idle
// one sends each item at once, and nothing waits for a timer.
//
// A Batcher has no goroutine of its own: callers send. A caller that
// finds a slot free sends the queue; when its batch is back it hands the
// slot to the first queued item, whose caller sends the next batch. So
// every round trip runs in a caller's goroutine, which its stage's worker
// owns and waits for.
package batch

import (
	"context"
	"slices"
	"sync"
)

// Batcher sends the items of concurrent callers together through exec.
type Batcher[T any] struct {
	exec            func(ctx context.Context, items []T)
	inFlight, limit int

	mu    sync.Mutex
	queue []*waiter[T]
	// slots counts slots taken: being sent, or handed to a queued
	// item's caller who has not sent yet.
	slots int
}

// New returns a Batcher that runs at most inFlight batches at once, of
// at most limit items each. exec runs one batch and writes each item's
// result into the item (T is usually a pointer); its callers return once
// it does.
func New[T any](inFlight, limit int, exec func(ctx context.Context, items []T)) *Batcher[T] {
	return &Batcher[T]{exec: exec, inFlight: inFlight, limit: limit}
}

type waiter[T any] struct {
	item T
	done chan struct{}
	// lead receives the slot handed to this item's caller. Under
	// Batcher.mu: owed says a handed slot is not used yet (it sits in
	// lead), queued that the item waits in the queue.
	lead   chan struct{}
	owed   bool
	queued bool
}

// Do queues item and returns once exec has run a batch holding it. When
// ctx ends first it returns ctx's error, and item must not be read: it
// may still be executed later, in another caller's batch, so exec must
// be idempotent for what a caller gives up on.
func (b *Batcher[T]) Do(ctx context.Context, item T) error {
	w := &waiter[T]{item: item, done: make(chan struct{}), lead: make(chan struct{}, 1), queued: true}
	b.mu.Lock()
	b.queue = append(b.queue, w)
	free := b.slots < b.inFlight
	if free {
		b.slots++
	}
	b.mu.Unlock()
	if free {
		b.send(ctx)
	}
	for {
		select {
		case <-w.done:
			b.leave(w)
			return nil
		case <-w.lead:
			// The handed slot is taken. Only here: a caller that found a
			// slot free may be handed another one before it sends (w is
			// queued meanwhile), and that one stays owed, in lead.
			b.mu.Lock()
			w.owed = false
			b.mu.Unlock()
			b.send(ctx)
		case <-ctx.Done():
			b.leave(w)
			return ctx.Err()
		}
	}
}

// send runs one batch of queued items on a slot its caller holds, then
// hands the slot on. The batch carries other callers' items, so it is not
// cut short when ctx ends (the store client's timeouts bound it).
func (b *Batcher[T]) send(ctx context.Context) {
	b.mu.Lock()
	n := min(len(b.queue), b.limit)
	batch := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	for _, w := range batch {
		w.queued = false
	}
	b.mu.Unlock()
	if n > 0 {
		items := make([]T, n)
		for i, w := range batch {
			items[i] = w.item
		}
		b.exec(context.WithoutCancel(ctx), items)
		for _, w := range batch {
			close(w.done)
		}
	}
	b.mu.Lock()
	b.passLocked()
	b.mu.Unlock()
}

// leave ends the wait of w's caller: w leaves the queue if it is still
// there, and a slot handed to it and not used is passed on.
func (b *Batcher[T]) leave(w *waiter[T]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.queued {
		i := slices.Index(b.queue, w)
		b.queue = slices.Delete(b.queue, i, i+1)
		w.queued = false
	}
	if w.owed {
		<-w.lead // owed: the slot sits in lead, and only w's caller takes it
		w.owed = false
		b.passLocked()
	}
}

// passLocked hands a freed slot to the first queued item that has none,
// or frees it when none waits. b.mu held.
func (b *Batcher[T]) passLocked() {
	for _, w := range b.queue {
		if !w.owed {
			w.owed = true
			w.lead <- struct{}{}
			return
		}
	}
	b.slots--
}
