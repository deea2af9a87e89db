package bus

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// progress keeps the server from redelivering a message that is still
// being handled. Without it a handler that waits longer than AckWait (an
// API call throttled by the server, a status write waiting for its
// request's spacing, a queue for the API client's slots) has its message
// delivered again, to this or another replica, which then does the same
// work a second time and waits as well. Each message handled for longer
// than every gets an in-progress ack every every; with every at a third
// of AckWait, the server hears about it at most two thirds of AckWait
// after its previous ack.
//
// One ticker serves every message in flight, so the cost is one goroutine
// per worker whatever its concurrency. Time is wall time: AckWait runs on
// the server's clock.
type progress struct {
	every time.Duration
	sent  prometheus.Counter

	mu   sync.Mutex
	msgs map[jetstream.Msg]time.Time
}

func newProgress(every time.Duration, sent prometheus.Counter) *progress {
	return &progress{every: max(every, 10*time.Millisecond), sent: sent, msgs: map[jetstream.Msg]time.Time{}}
}

// add starts the clock of a message being handled.
func (p *progress) add(m jetstream.Msg) {
	p.mu.Lock()
	p.msgs[m] = time.Now()
	p.mu.Unlock()
}

// done forgets a message whose handling ended.
func (p *progress) done(m jetstream.Msg) {
	p.mu.Lock()
	delete(p.msgs, m)
	p.mu.Unlock()
}

// run sends the in-progress acks until stop is closed.
func (p *progress) run(stop <-chan struct{}) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			p.tick(now)
		}
	}
}

func (p *progress) tick(now time.Time) {
	var due []jetstream.Msg
	p.mu.Lock()
	for m, start := range p.msgs {
		if now.Sub(start) >= p.every {
			due = append(due, m)
		}
	}
	p.mu.Unlock()
	for _, m := range due {
		// A message settled meanwhile answers ErrMsgAlreadyAckd; an
		// in-progress ack lost on the way costs at worst a redelivery,
		// which the stage's idempotent handling absorbs.
		if m.InProgress() == nil {
			p.sent.Inc()
		}
	}
}
