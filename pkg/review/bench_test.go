package review_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/review/reviewtest"
	"github.com/stormweir/stormweir/test/testenv"
)

// benchSignals is the size of the recorded range the replay benchmark
// reads: 100,000 signals of 1,000 incidents (100 each), and the deduper's
// event for each, on file-backed streams of a local nats-server.
const (
	benchSignals   = 100_000
	benchIncidents = 1_000
)

// BenchmarkReplay reads a recorded range of 100,000 signals (and their
// 100,000 decisions) from a local file-backed stream: the JetStream
// ordered consumer alone (the ceiling: every message read and dropped),
// the timeline of one incident, every timeline, and a what-if. Each
// reports signals/s; the review runs report their share of the ceiling
// measured in the same run.
func BenchmarkReplay(b *testing.B) {
	nt := testenv.StartNATS(b)
	cfg := testenv.Config(nt.URL)
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ, &cfg.Bus.Archive.Signals, &cfg.Bus.Archive.Incidents} {
		s.Storage, s.MaxBytes = "file", 1<<30
	}
	nc, err := nats.Connect(nt.URL)
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	ctx := context.Background()
	fp, err := reviewtest.Fill(ctx, js, cfg, benchSignals, benchIncidents)
	require.NoError(b, err)

	var ceiling float64
	rate := func(b *testing.B) float64 {
		r := float64(benchSignals) * float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(r, "signals/s")
		if ceiling > 0 {
			b.ReportMetric(100*r/ceiling, "%ceiling")
		}
		return r
	}
	b.Run("ordered-consumer", func(b *testing.B) {
		for b.Loop() {
			n, err := reviewtest.ReadRaw(ctx, js, cfg.Bus.Prefix)
			require.NoError(b, err)
			require.Equal(b, 2*benchSignals, n)
		}
		ceiling = rate(b)
	})
	b.Run("one-incident", func(b *testing.B) {
		for b.Loop() {
			rep, err := review.Read(ctx, js, cfg.Bus.Prefix, review.Selector{Fingerprint: fp}, nil)
			require.NoError(b, err)
			require.Len(b, rep.Timelines, 1)
			require.Len(b, rep.Timelines[0].Rows, 101)
		}
		rate(b)
	})
	b.Run("all-incidents", func(b *testing.B) {
		for b.Loop() {
			rep, err := review.Read(ctx, js, cfg.Bus.Prefix, review.Selector{}, nil)
			require.NoError(b, err)
			require.Len(b, rep.Timelines, benchIncidents)
		}
		rate(b)
	})
	b.Run("what-if", func(b *testing.B) {
		alt := cfg
		alt.Aggregator.RateThreshold = 2000
		for b.Loop() {
			d, err := review.WhatIf(ctx, js, cfg.Bus.Prefix, review.Selector{}, alt, []string{"aggregator.rate_threshold=2000"}, nil)
			require.NoError(b, err)
			require.Zero(b, d.Incidents, "the bench records no routes")
		}
		rate(b)
	})
}
