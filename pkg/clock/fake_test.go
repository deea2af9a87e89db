package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/clock"
)

var start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fired(t clock.Timer) bool {
	select {
	case <-t.C():
		return true
	default:
		return false
	}
}

func TestFake_timerFiresWhenTheTimeReachesIt(t *testing.T) {
	clk := clock.NewFake(start)
	tm := clk.NewTimer(time.Second)
	assert.Equal(t, 1, clk.Waiters())
	clk.Advance(999 * time.Millisecond)
	assert.False(t, fired(tm), "1ms early")
	clk.Advance(time.Millisecond)
	assert.True(t, fired(tm))
	assert.Zero(t, clk.Waiters())
	assert.Equal(t, start.Add(time.Second), clk.Now())
	assert.Equal(t, time.Second, clk.Since(start))

	tm.Reset(time.Minute)
	clk.Set(start.Add(2 * time.Minute))
	assert.True(t, fired(tm), "Set fires what it passes")
}

func TestFake_zeroOrNegativeDurationFiresAtOnce(t *testing.T) {
	clk := clock.NewFake(start)
	assert.True(t, fired(clk.NewTimer(0)), "as time.NewTimer(0)")
	tm := clk.NewTimer(time.Hour)
	tm.Reset(-time.Second)
	assert.True(t, fired(tm), "as Timer.Reset with a past time")
	assert.Zero(t, clk.Waiters())
}

func TestFake_stopDisarms(t *testing.T) {
	clk := clock.NewFake(start)
	tm := clk.NewTimer(time.Second)
	assert.True(t, tm.Stop())
	assert.Zero(t, clk.Waiters())
	clk.Advance(time.Hour)
	assert.False(t, fired(tm))
}

func TestFake_blockUntilWaitsForTheCodeToArmItsTimer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clk := clock.NewFake(start)
	armed := make(chan clock.Timer, 1)
	go func() { armed <- clk.NewTimer(time.Second) }()
	require.NoError(t, clk.BlockUntil(ctx, 1))
	tm := <-armed
	clk.Advance(time.Second)
	assert.True(t, fired(tm))

	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	assert.ErrorContains(t, clk.BlockUntil(short, 1), "waiting for 1 armed timers on the fake clock (0 armed)")
}
