package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// crashable dials the NATS connection of one aggregator process. crash
// drops every connection at once and refuses to dial again: to the server
// the process is gone as after a SIGKILL, so nothing it had in flight is
// acked and its messages come back to the other replica after ack_wait.
type crashable struct {
	mu      sync.Mutex
	conns   []net.Conn
	crashed bool
}

// Dial implements nats.CustomDialer.
func (c *crashable) Dial(network, address string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return nil, errors.New("process crashed")
	}
	conn, err := net.DialTimeout(network, address, 2*time.Second)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *crashable) crash() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crashed = true
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// startProcess runs stage as its binary does (app.Run), in-process on a
// connection that can crash and on the test's fake clock, until crash or
// the test's end, and waits until its /readyz answers.
func startProcess(t testing.TB, cfg config.Config, clk clock.Clock, stage string) (crash func()) {
	t.Helper()
	port := testenv.FreePort(t)
	cfg.Worker.Listen = "127.0.0.1:" + strconv.Itoa(port)
	d := &crashable{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.DiscardHandler)
	go func() {
		done <- app.Run(ctx, cfg, log, stage, app.Options{Clock: clk, NATS: []nats.Option{nats.SetCustomDialer(d)}}, stage)
	}()
	stop := sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/readyz"
	require.Eventually(t, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "%s not ready", stage)
	return func() {
		d.crash()
		stop()
	}
}

// A deduper and two aggregator processes on one fake clock; one
// aggregator crashes mid-storm and another starts. The storm still ends as
// exactly one storm incident with every member counted once, closed
// exactly once, exactly at its last member + inactivity_timeout.
func TestAggregator_twoProcessesOneKilledMidStorm(t *testing.T) {
	n := testenv.StartNATS(t)
	r := testenv.LocalRedis(t)
	cfg := testenv.Config(n.URL)
	cfg.Redis.KeyPrefix = r.Prefix
	cfg.Aggregator.InactivityTimeout = 5 * time.Second
	// Fake time: every move of the clock by 1ms or more fires a sweep.
	cfg.Aggregator.SweepInterval = time.Millisecond
	require.NoError(t, cfg.Validate())
	clk := clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))

	ctx := context.Background()
	conn, err := bus.Connect(cfg.Bus, "aggregator-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(ctx, conn.JS, cfg.Bus))
	pub := bus.NewPublisher(conn.JS, 10*time.Second)
	t.Cleanup(pub.Close)

	// A deduper and two aggregator processes, each on its own connection.
	startProcess(t, cfg, clk, app.Deduper)
	crashA := startProcess(t, cfg, clk, app.Aggregator)
	startProcess(t, cfg, clk, app.Aggregator)
	// Both aggregators' sweepers wait on the clock once they run.
	waitTimers(t, clk, 2)

	subj := bus.NewSubjects(cfg.Bus.Prefix)
	fp := signal.MustFingerprinter(signal.DefaultFingerprintFields)
	// t=0.2s…2s: 200 alerts for 200 pods of one alertname and namespace,
	// in batches of 20 every 200ms. Aggregator A crashes right after the
	// 5th batch is published, while it handles it, and a third one starts
	// after the 7th.
	for batch := range 10 {
		clk.Advance(200 * time.Millisecond)
		outs := make([]bus.Output, 0, 20)
		for i := batch * 20; i < (batch+1)*20; i++ {
			s := &signal.Signal{
				ID: fmt.Sprintf("sig-%d", i), Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
				Status: signal.StatusFiring, Severity: signal.SeverityWarning, Namespace: "shop",
				Target:   signal.Target{Kind: "Pod", Name: fmt.Sprintf("pod-%d", i), Namespace: "shop"},
				StartsAt: clk.Now(), ReceivedAt: clk.Now(),
			}
			s.Fingerprint = fp.Fingerprint(s)
			data, err := signal.Encode(s)
			require.NoError(t, err)
			outs = append(outs, bus.Output{Subject: subj.Signals(s.Source), Data: data, MsgID: s.ID})
		}
		_, err := pub.Publish(ctx, outs...)
		require.NoError(t, err)
		switch batch {
		case 4:
			crashA()
		case 6:
			startProcess(t, cfg, clk, app.Aggregator)
		}
	}
	// Every decision is made at t ≤ 2s, the last batch's at t = 2s, so
	// that is when the storm's last member joined. What the crashed
	// process left unacked comes back to the others after ack_wait.
	waitIdle(t, conn.JS, subj)
	lastMember := clk.Now()
	sweep := func(d time.Duration) outputs {
		t.Helper()
		waitIdle(t, conn.JS, subj)
		waitTimers(t, clk, 2)
		clk.Advance(d)
		waitTimers(t, clk, 2) // both aggregators' sweeps have finished
		return readOutputs(t, conn.JS, subj)
	}

	o := sweep(5*time.Second - time.Millisecond)
	assert.Empty(t, o.closes, "no close before the inactivity timeout")
	o = sweep(time.Millisecond)
	require.Len(t, o.closes, 1, "closed at last member + 5s")
	// Both aggregators sweep again, past the close claim's lease too.
	o = sweep(time.Minute)

	assert.Len(t, o.openIDs, 10, "individual incidents")
	assert.Len(t, o.open, 10, "each published once")
	require.Len(t, o.closes, 1, "close emitted exactly once")
	stormIDs := map[string]bool{}
	for _, s := range o.storms {
		stormIDs[s.StormID] = true
	}
	assert.Len(t, stormIDs, 1, "exactly one storm incident")
	c := o.closes[0]
	assert.Equal(t, int64(190), c.Members)
	assert.Equal(t, int64(190), c.Occurrences)
	assert.Equal(t, int64(200), c.AffectedTotal)
	assert.Equal(t, lastMember.Add(5*time.Second), c.ClosedAt)
}

// waitIdle waits until the deduper has acked every signal and the
// aggregators every event the deduper published for them.
func waitIdle(t testing.TB, js jetstream.JetStream, subj bus.Subjects) {
	t.Helper()
	testenv.WaitAcked(t, js, subj.StreamName(bus.StreamSignals), app.Deduper, time.Minute)
	testenv.WaitAcked(t, js, subj.StreamName(bus.StreamIncidents), app.Aggregator, time.Minute, subj.DedupNew(), subj.DedupMember())
}

// waitTimers waits until n timers are armed on clk.
func waitTimers(t testing.TB, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, clk.BlockUntil(ctx, n))
}

type outputs struct {
	open    []incident.Event
	openIDs map[string]bool
	storms  []incident.Storm
	closes  []incident.Storm
}

// readOutputs returns what the aggregators stored for the writer.
func readOutputs(t testing.TB, js jetstream.JetStream, subj bus.Subjects) outputs {
	t.Helper()
	o := outputs{openIDs: map[string]bool{}}
	for _, m := range testenv.ReadArchived(t, js, subj.StreamName(bus.StreamIncidents), subj.IncidentsOpen(), subj.IncidentsStorm()) {
		if m.Subject == subj.IncidentsOpen() {
			var ev incident.Event
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			o.open = append(o.open, ev)
			o.openIDs[ev.IncidentID] = true
			continue
		}
		var s incident.Storm
		require.NoError(t, json.Unmarshal(m.Data, &s))
		o.storms = append(o.storms, s)
		if s.Phase == incident.StormClosed {
			o.closes = append(o.closes, s)
		}
	}
	return o
}
