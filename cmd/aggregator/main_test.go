package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// testConfigYAML is shared by the aggregator processes and the test's
// in-process deduper, so both declare the same streams and consumers.
const testConfigYAML = `
log: {level: warn, format: text}
worker: {listen: "127.0.0.1:0", drain_timeout: 5s}
bus:
  signals: {storage: memory, max_bytes: 67108864}
  incidents: {storage: memory, max_bytes: 67108864}
  dlq: {storage: memory, max_bytes: 67108864}
  consumer:
    ack_wait: 2s
    backoff: []
    retry_delays: [50ms, 100ms, 250ms]
    concurrency: 32
    fetch_batch: 64
    fetch_max_wait: 200ms
    max_ack_pending: 1024
aggregator:
  inactivity_timeout: 5s
  sweep_interval: 100ms
`

// aggregatorProc is one aggregator process of the test.
type aggregatorProc struct {
	cmd *exec.Cmd
}

func startAggregator(t testing.TB, bin string, env []string, logPath string) *aggregatorProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	p := &aggregatorProc{cmd: cmd}
	t.Cleanup(func() {
		p.kill()
		_ = logf.Close()
	})
	return p
}

// kill ends the process with SIGKILL: a crash, no drain.
func (p *aggregatorProc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func TestAggregator_twoProcessesOneKilledMidStorm(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "aggregator")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building the aggregator: %s", out)

	n := testenv.StartNATS(t)
	r := testenv.LocalRedis(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(testConfigYAML), 0o644))
	prefix := "swt" + testenv.RandomID()
	env := []string{
		"STORMWEIR_CONFIG=" + cfgPath, "STORMWEIR_BUS_URL=" + n.URL, "STORMWEIR_BUS_PREFIX=" + prefix,
		"STORMWEIR_REDIS_ADDRS=" + r.Addr, "STORMWEIR_REDIS_KEY_PREFIX=" + r.Prefix,
	}
	for _, e := range env {
		k, v, _ := splitEnv(e)
		t.Setenv(k, v)
	}
	loaded, err := config.Load("aggregator-test", nil)
	require.NoError(t, err)
	cfg := loaded.Config

	// The deduper runs in the test's process; the aggregators are real
	// processes.
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	proc, err := service.NewProcess(ctx, cfg, log, "deduper")
	require.NoError(t, err)
	ded, err := dedup.New(ctx, proc, dedup.NewRedisStore(r.Client, r.Prefix, cfg.Dedup, clock.Real{}))
	require.NoError(t, err)
	dctx, stopDedup := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ded.Run(dctx) }()
	t.Cleanup(func() { stopDedup(); <-done; proc.Close() })

	logPath := filepath.Join(dir, "aggregators.log")
	a := startAggregator(t, bin, env, logPath)
	startAggregator(t, bin, env, logPath)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("aggregator logs:\n%s", b)
		}
	})

	subj := bus.NewSubjects(prefix)
	pub := bus.NewPublisher(proc.Bus.JS, 10*time.Second)
	fp := signal.MustFingerprinter(signal.DefaultFingerprintFields)
	// t=0..2s: 200 alerts for 200 pods of one alertname and namespace in
	// batches of 20; aggregator A is killed after the 5th batch and
	// started again after the 7th.
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
			a.kill()
		case 6:
			startAggregator(t, bin, env, logPath)
		}
	}

	// The storm closes 5s after its last member; wait for the close, then
	// a little longer to see that it is not emitted again.
	var o outputs
	require.Eventually(t, func() bool {
		o = readOutputs(t, proc.Bus.JS, subj)
		return len(o.closes) > 0
	}, 60*time.Second, 100*time.Millisecond, "no storm close")
	time.Sleep(2 * time.Second)
	o = readOutputs(t, proc.Bus.JS, subj)

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

func splitEnv(e string) (string, string, bool) {
	for i := range e {
		if e[i] == '=' {
			return e[:i], e[i+1:], true
		}
	}
	return e, "", false
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
