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
// connection that can crash, until crash or the test's end, and waits
// until its /readyz answers.
func startProcess(t testing.TB, cfg config.Config, stage string) (crash func()) {
	t.Helper()
	port := testenv.FreePort(t)
	cfg.Worker.Listen = "127.0.0.1:" + strconv.Itoa(port)
	d := &crashable{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.DiscardHandler)
	go func() {
		done <- app.Run(ctx, cfg, log, stage, app.Options{NATS: []nats.Option{nats.SetCustomDialer(d)}}, stage)
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

func TestAggregator_twoProcessesOneKilledMidStorm(t *testing.T) {
	n := testenv.StartNATS(t)
	r := testenv.LocalRedis(t)
	cfg := testenv.Config(n.URL)
	cfg.Redis.KeyPrefix = r.Prefix
	cfg.Aggregator.InactivityTimeout = 5 * time.Second
	cfg.Aggregator.SweepInterval = 100 * time.Millisecond
	require.NoError(t, cfg.Validate())

	ctx := context.Background()
	conn, err := bus.Connect(cfg.Bus, "aggregator-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(ctx, conn.JS, cfg.Bus))
	pub := bus.NewPublisher(conn.JS, 10*time.Second)
	t.Cleanup(pub.Close)

	// A deduper and two aggregator processes, each on its own connection.
	startProcess(t, cfg, app.Deduper)
	crashA := startProcess(t, cfg, app.Aggregator)
	startProcess(t, cfg, app.Aggregator)

	subj := bus.NewSubjects(cfg.Bus.Prefix)
	fp := signal.MustFingerprinter(signal.DefaultFingerprintFields)
	// t=0..2s: 200 alerts for 200 pods of one alertname and namespace in
	// batches of 20; aggregator A crashes after the 5th batch and a third
	// one starts after the 7th.
	for batch := range 10 {
		outs := make([]bus.Output, 0, 20)
		for i := batch * 20; i < (batch+1)*20; i++ {
			s := &signal.Signal{
				ID: fmt.Sprintf("sig-%d", i), Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
				Status: signal.StatusFiring, Severity: signal.SeverityWarning, Namespace: "shop",
				Target:   signal.Target{Kind: "Pod", Name: fmt.Sprintf("pod-%d", i), Namespace: "shop"},
				StartsAt: time.Now(), ReceivedAt: time.Now(),
			}
			s.Fingerprint = fp.Fingerprint(s)
			data, err := signal.Encode(s)
			require.NoError(t, err)
			outs = append(outs, bus.Output{Subject: subj.Signals(s.Source), Data: data, MsgID: s.ID})
		}
		_, err := pub.Publish(ctx, outs...)
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		switch batch {
		case 4:
			crashA()
		case 6:
			startProcess(t, cfg, app.Aggregator)
		}
	}

	// The storm closes 5s after its last member; wait for the close, then
	// a little longer to see that it is not emitted again.
	var o outputs
	require.Eventually(t, func() bool {
		o = readOutputs(t, conn.JS, subj)
		return len(o.closes) > 0
	}, 60*time.Second, 100*time.Millisecond, "no storm close")
	time.Sleep(2 * time.Second)
	o = readOutputs(t, conn.JS, subj)

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
	assert.False(t, c.ClosedAt.IsZero())
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
	for _, m := range testenv.ReadStream(t, js, subj.StreamName(bus.StreamIncidents), subj.IncidentsOpen(), subj.IncidentsStorm()) {
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
