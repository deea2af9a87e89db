package clock

import (
	"context"
	"fmt"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// Fake is a clock that only moves when told to; safe for concurrent use.
// Its timers fire when Advance or Set reaches them, in the goroutine that
// moved the time (they only send on their channel).
type Fake struct {
	c *clocktesting.FakeClock
}

// NewFake returns a Fake set to start.
func NewFake(start time.Time) *Fake { return &Fake{c: clocktesting.NewFakeClock(start)} }

// Now returns the fake time.
func (f *Fake) Now() time.Time { return f.c.Now() }

// Since returns the fake time elapsed since t.
func (f *Fake) Since(t time.Time) time.Duration { return f.c.Since(t) }

// NewTimer returns a timer that fires when the fake time reaches now + d.
// Like time.NewTimer, a d of zero or less fires at once.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{Timer: f.c.NewTimer(d), f: f}
	t.fireIfDue(d)
	return t
}

// Advance moves the fake time forward by d and fires the timers it
// reaches.
func (f *Fake) Advance(d time.Duration) { f.c.Step(d) }

// Set moves the fake time to t and fires the timers it reaches.
func (f *Fake) Set(t time.Time) { f.c.SetTime(t) }

// Waiters is the number of armed timers: created or reset, and neither
// fired nor stopped.
func (f *Fake) Waiters() int { return f.c.Waiters() }

// BlockUntil waits until exactly n timers are armed, or ctx ends. A test
// calls it before Advance, to know that the code under test has armed
// the timer the advance is meant to fire, and after it, to know that
// the code handled the firing and armed its next timer (a loop re-arms
// only after its work is done). It polls: the fake clock has no hook.
func (f *Fake) BlockUntil(ctx context.Context, n int) error {
	wait := 50 * time.Microsecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for f.c.Waiters() != n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d armed timers on the fake clock (%d armed): %w", n, f.c.Waiters(), ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, time.Millisecond)
		t.Reset(wait)
	}
	return nil
}

// fakeTimer is the fake clock's timer with time.Timer's behaviour for a
// duration of zero or less (fire at once; the fake would wait for the
// next move of the time).
type fakeTimer struct {
	Timer
	f *Fake
}

// Reset re-arms the timer d from now.
func (t *fakeTimer) Reset(d time.Duration) bool {
	active := t.Timer.Reset(d)
	t.fireIfDue(d)
	return active
}

func (t *fakeTimer) fireIfDue(d time.Duration) {
	if d <= 0 {
		// Fires every timer due now: only this one, since any other
		// armed for this instant fired when the time got here.
		t.f.c.Step(0)
	}
}
