package bus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
)

// TestWorker_statsShowLagAgeAndDLQDepth: in-0 is dead-lettered, in-1
// keeps failing until released, in-2 succeeds. While in-1 is retried the
// stage shows a lag of one, an oldest-unprocessed age that grows past a
// second, and a DLQ depth of one; once in-1 succeeds lag and age fall to 0
// and the DLQ depth stays.
func TestWorker_statsShowLagAgeAndDLQDepth(t *testing.T) {
	e := newEnv(t, func(c *config.Bus) { c.Consumer.MaxDeliver = -1 })
	published := time.Now()
	e.publishInputs(3)

	var release atomic.Bool
	h := bus.HandlerFunc(func(_ context.Context, m *bus.Msg) ([]bus.Output, error) {
		switch m.MsgID() {
		case "in-0":
			return nil, bus.Permanent(errors.New("undecodable"))
		case "in-1":
			if !release.Load() {
				return nil, errors.New("redis unavailable")
			}
		}
		return nil, nil
	})
	cons, err := bus.EnsureConsumer(context.Background(), e.conn.JS, e.cfg, bus.ConsumerSpec{
		Stage: "test", Stream: bus.StreamSignals, Subjects: []string{e.subj.AllSignals()},
	})
	require.NoError(t, err)
	m := bus.NewMetrics(prometheus.NewRegistry())
	w, err := bus.NewWorker(bus.WorkerOptions{
		Stage: "test", Consumer: cons, Publisher: e.pub, JS: e.conn.JS, Handler: h, Subjects: e.subj,
		Config: e.cfg.Consumer, DrainTimeout: time.Second, Metrics: m, Log: quiet(),
		StatsInterval: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	gauge := func(g *prometheus.GaugeVec) float64 {
		var d dto.Metric
		require.NoError(t, g.WithLabelValues("test").Write(&d))
		return d.GetGauge().GetValue()
	}
	lag := func() float64 { return gauge(m.Pending) + gauge(m.AckPending) }

	require.Eventually(t, func() bool {
		return gauge(m.DLQMessages) == 1 && lag() == 1 && gauge(m.OldestUnprocessedAge) > 1
	}, 10*time.Second, 20*time.Millisecond, "in-1 retried for over a second, in-0 in the DLQ")
	// The age is in-1's time in the stream, not the time since its last
	// delivery: it is bounded by the time since it was published.
	assert.LessOrEqual(t, gauge(m.OldestUnprocessedAge), time.Since(published).Seconds())

	release.Store(true)
	require.Eventually(t, func() bool {
		return lag() == 0 && gauge(m.OldestUnprocessedAge) == 0
	}, 10*time.Second, 20*time.Millisecond, "in-1 done: no lag, no age")
	assert.Equal(t, 1.0, gauge(m.DLQMessages), "the DLQ keeps in-0")
}
