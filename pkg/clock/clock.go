// Package clock is the time source of every time-based decision (dedup
// windows, storm windows and their sweeper, write spacing, memo expiry,
// token re-reads), so tests and replays drive time instead of sleeping.
//
// It is a thin layer over k8s.io/utils/clock, which client-go already
// brings in: Real is its RealClock, Fake wraps its FakeClock. Clock names
// only the methods whose fake behaves like the real one:
//
//   - no AfterFunc: the fake runs the callback while it holds its own
//     lock, so a callback that reads the clock deadlocks;
//   - no NewTicker or Tick: a stopped fake ticker stays registered, so
//     Fake.Waiters could no longer tell a test what is armed; a loop
//     re-arms a Timer instead;
//   - no Sleep or After: the fake Sleep moves the fake time, and After
//     cannot be stopped.
//
// Code that waits on a network (request timeouts, reconnect and retry
// backoff, drain budgets) or measures it (latency histograms) keeps the
// wall clock: those are about the world, not about the stream's time.
package clock

import (
	"time"

	k8sclock "k8s.io/utils/clock"
)

// Clock tells the time and arms timers.
type Clock interface {
	Now() time.Time
	Since(t time.Time) time.Duration
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's one-shot timer: C fires once the time is reached,
// Stop disarms it, Reset re-arms it (after a receive from C or a Stop).
type Timer = k8sclock.Timer

// Real is the wall clock.
type Real = k8sclock.RealClock

var (
	_ Clock = Real{}
	_ Clock = (*Fake)(nil)
)
