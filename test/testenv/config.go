package testenv

import (
	"time"

	"github.com/stormweir/stormweir/pkg/config"
)

// Config is the default configuration on the bus at natsURL with what a
// test on one machine needs instead of the production defaults, and only
// that: streams in memory (64 MiB each) under a bus prefix of its own; a
// message whose worker died comes back after 2s (no server-side BackOff,
// which would stretch every retry delay) and a failed one after 50 to
// 250ms; short pulls; health and metrics on a random loopback port; a 5s
// drain.
func Config(natsURL string) config.Config {
	cfg := config.Default()
	cfg.Bus.URL = natsURL
	cfg.Bus.Prefix = "swt" + RandomID()
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ, &cfg.Bus.Archive.Signals, &cfg.Bus.Archive.Incidents} {
		s.Storage, s.MaxBytes = "memory", 64<<20
	}
	c := &cfg.Bus.Consumer
	c.AckWait = 2 * time.Second
	c.BackOff = nil
	c.RetryDelays = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond}
	c.Concurrency = 32
	c.FetchBatch = 64
	c.FetchMaxWait = 200 * time.Millisecond
	c.MaxAckPending = 1024
	cfg.Worker.Listen = "127.0.0.1:0"
	cfg.Worker.DrainTimeout = 5 * time.Second
	return cfg
}
