package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/review/reviewtest"
	"github.com/stormweir/stormweir/test/testenv"
)

// Replay scenario sizes: a recorded range of 100,000 signals of 1,000
// incidents, each with the deduper's event.
const (
	replaySignals   = 100_000
	replayIncidents = 1_000
	replayRounds    = 3
)

// replay measures stormweir replay and what-if reading a local stream
// (an in-process nats-server, file storage) against the JetStream ordered
// consumer reading the same messages in the same run: the ceiling. Each
// figure is the median of three rounds.
func (b *bench) replay() {
	nt := testenv.StartNATS(b.tb)
	cfg := testenv.Config(nt.URL)
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ, &cfg.Bus.Archive.Signals, &cfg.Bus.Archive.Incidents} {
		s.Storage, s.MaxBytes = "file", 1<<30
	}
	nc, err := nats.Connect(nt.URL)
	b.must(err, "connecting to nats")
	defer nc.Close()
	js, err := jetstream.New(nc)
	b.must(err, "jetstream")
	ctx := context.Background()
	fp, err := reviewtest.Fill(ctx, js, cfg, replaySignals, replayIncidents)
	b.must(err, "recording the streams")

	rate := func(what string, f func() error) float64 {
		var rates []float64
		for range replayRounds {
			start := time.Now()
			b.must(f(), what)
			rates = append(rates, replaySignals/time.Since(start).Seconds())
		}
		slices.Sort(rates)
		return rates[len(rates)/2]
	}
	ceiling := rate("reading with the ordered consumer", func() error {
		n, err := reviewtest.ReadRaw(ctx, js, cfg.Bus.Prefix)
		if err == nil && n != 2*replaySignals {
			err = fmt.Errorf("read %d messages, want %d", n, 2*replaySignals)
		}
		return err
	})
	one := rate("replaying one incident", func() error {
		_, err := review.Read(ctx, js, cfg.Bus.Prefix, review.Selector{Fingerprint: fp}, nil)
		return err
	})
	all := rate("replaying every incident", func() error {
		_, err := review.Read(ctx, js, cfg.Bus.Prefix, review.Selector{}, nil)
		return err
	})
	alt := cfg
	alt.Aggregator.RateThreshold = 2 * replayIncidents
	whatIf := rate("what-if", func() error {
		_, err := review.WhatIf(ctx, js, cfg.Bus.Prefix, review.Selector{}, alt, nil, nil)
		return err
	})
	low := min(one, all, whatIf)
	b.add(row{
		scenario: "replay and what-if from a local stream (100,000 signals of 1,000 incidents and the deduper's event for each, file storage, in-process nats-server)",
		target:   "≥ 100,000 signals/s and ≥ 50% of the JetStream ordered-consumer ceiling",
		result: fmt.Sprintf("one incident's timeline %.0f signals/s (%.0f%%), every timeline %.0f/s (%.0f%%), what-if %.0f/s (%.0f%%); ordered consumer alone (both streams, messages dropped) %.0f signals/s in the same run; medians of %d rounds",
			one, 100*one/ceiling, all, 100*all/ceiling, whatIf, 100*whatIf/ceiling, ceiling, replayRounds),
		verdict: verdict(low >= 100_000 && low >= ceiling/2, fmt.Sprintf("%.0f%% of 100,000/s, %.0f%% of the ceiling", 100*low/100_000, 100*low/ceiling)),
		command: "`go run ./test/bench -scenario replay` (or `go test -run XXX -bench BenchmarkReplay ./pkg/review`)",
	})
}
