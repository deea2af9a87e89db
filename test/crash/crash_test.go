// Package crash holds the pipeline's crash tests: the distributed pipeline
// (four stage processes, nats-server, redis-server, kube-apiserver) under a
// load with duplicates and a storm, while processes are SIGKILLed and
// restarted. Afterwards every incident must exist exactly once with its
// exact occurrence count, the storm exactly once with its exact members,
// and the DLQ must be empty: DESIGN §8's promise, checked end to end.
package crash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/test/pipeline"
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: the crash tests need a real kube-apiserver and etcd.\n"+
			"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
		os.Exit(1)
	}
	code := m.Run()
	pipeline.RemoveBinaries()
	os.Exit(code)
}

// The load of every crash test: 20,000 alerts in 100-alert webhooks, 70%
// repeats of an incident already sent, and one storm (a tenth of the new
// incidents, about 600 pods) among individual incidents spread so that
// none of them forms a storm of its own. At 1,000 alerts/s it lasts about
// 20 s, long enough to crash something at several points of it.
func crashLoad() loadgen.Config {
	return loadgen.Config{
		Alerts:         20_000,
		BatchSize:      100,
		Rate:           1000,
		Concurrency:    4,
		DuplicateRatio: 0.7,
		StormRatio:     0.1,
		MaxPerScope:    5,
		Seed:           42,
	}
}

// precursors is how many storm incidents stay individual before the storm
// opens: the aggregator's rate threshold.
var precursors = config.DefaultAggregator().RateThreshold

// crashRun runs the crash load on p, calls faults in the test goroutine
// while it runs, then waits for the pipeline to settle and checks the
// requests, the DLQ and the load generator's report.
func crashRun(t *testing.T, p *pipeline.Pipeline, cfg loadgen.Config, faults func()) {
	t.Helper()
	ctx := context.Background()
	type outcome struct {
		rep loadgen.Report
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		rep, err := p.Load(ctx, cfg)
		done <- outcome{rep, err}
	}()
	faults()
	out := <-done
	require.NoError(t, out.err, "running the load")
	rep := out.rep
	t.Logf("load: %d requests, %d alerts accepted (%d absorbed as duplicate deliveries), %d rejected, %d errors, %.0f alerts/s; expected %d incidents (%d in the storm)",
		rep.Requests, rep.Accepted, rep.Duplicates, rep.Rejected, rep.Errors, rep.AcceptedPerSec, rep.Expected.Incidents, rep.Expected.StormIncidents)
	require.Zero(t, rep.Errors, "every webhook is accepted in the end (loadgen retries 503s and connection errors)")
	require.Equal(t, cfg.Alerts, rep.Accepted)
	require.Zero(t, rep.Rejected)

	settle := time.Now()
	res, err := p.WaitCheck(ctx, rep.Expected, precursors, settleTimeout())
	if !errors.Is(err, pipeline.ErrMismatch) {
		require.NoError(t, err, "waiting for the pipeline to settle")
	}
	dlq, err := p.DLQ(ctx)
	require.NoError(t, err)
	st, err := p.Consumers(ctx)
	require.NoError(t, err)
	t.Logf("settled %s after the load: %s; DLQ %d; consumers %+v", time.Since(settle).Round(100*time.Millisecond), res, dlq, st)
	t.Logf("counts: lost %d, duplicated %d, wrong counts %d, unexpected %d, DLQ %d (%d incidents, %d alerts)",
		len(res.Lost), len(res.Duplicated), len(res.WrongCount), len(res.Unexpected), dlq, rep.Expected.Incidents, rep.Accepted)
	for _, name := range p.Names {
		if p.Procs[name].Pid() == 0 {
			t.Logf("%s: %d starts, not running", name, p.Procs[name].Starts)
			continue
		}
		m, err := p.Metrics(ctx, name)
		if assert.NoError(t, err) {
			t.Logf("%s: %d starts, acks %v, naks %v, dlq %v", name, p.Procs[name].Starts,
				m.Value("stormweir_worker_messages_total", map[string]string{"result": "ack"}),
				m.Value("stormweir_worker_messages_total", map[string]string{"result": "nak"}),
				m.Value("stormweir_worker_messages_total", map[string]string{"result": "dlq"}))
		}
	}

	assert.Empty(t, res.Lost, "lost incidents")
	assert.Empty(t, res.Duplicated, "incidents with more than one request")
	assert.Empty(t, res.WrongCount, "requests with a wrong occurrence count")
	assert.Empty(t, res.Unexpected, "requests of no incident")
	assert.Equal(t, res.Want, res.Requests, "requests")
	assert.Equal(t, 1, res.WantStormRequests, "the load holds one storm")
	assert.Equal(t, 1, res.StormRequests, "storm requests")
	assert.Equal(t, precursors, res.Precursors, "storm precursors with requests of their own")
	assert.Equal(t, res.WantStormMembers, res.StormMembers, "storm members")
	assert.Equal(t, res.WantStormOccurrences, res.StormOccurrences, "storm occurrences (the sum over its members)")
	assert.Equal(t, res.WantStormAffected, res.StormAffected, "storm affected resources")
	assert.Zero(t, dlq, "messages in the DLQ")
}

// at sleeps until d after start.
func at(start time.Time, d time.Duration) {
	time.Sleep(time.Until(start.Add(d)))
}

// TestPipeline_survivesStageKills SIGKILLs and restarts every stage once
// during the load: the deduper, the aggregator, the writer and the
// receiver. Killed workers' unacked messages come back after AckWait and
// are handled idempotently; webhooks in flight at the receiver's crash
// are retried by the sender and absorbed by the msg-id.
func TestPipeline_survivesStageKills(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{})
	crashRun(t, p, crashLoad(), func() { killEveryStage(t, p) })
}

// TestPipeline_securedSurvivesStageKills is the same on a secured
// deployment: every stage connects to NATS as its own user of
// deploy/nats/accounts.conf, over mutual TLS, and to Redis with a password
// file, over mutual TLS; each restart authenticates again, and no stage
// is refused anything it does.
func TestPipeline_securedSurvivesStageKills(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{Secured: true})
	crashRun(t, p, crashLoad(), func() { killEveryStage(t, p) })
	for _, name := range pipeline.Stages {
		assert.Empty(t, p.Procs[name].Grep("refused"), "%s: refused operations", name)
	}
}

// killEveryStage restarts the deduper, the aggregator, the writer and the
// receiver with kill -9, four seconds apart.
func killEveryStage(t *testing.T, p *pipeline.Pipeline) {
	start := time.Now()
	for i, name := range []string{pipeline.Deduper, pipeline.Aggregator, pipeline.Writer, pipeline.Receiver} {
		at(start, time.Duration(2+4*i)*time.Second)
		t.Logf("t=%s: kill -9 %s", time.Since(start).Round(time.Millisecond), name)
		p.Restart(name)
		t.Logf("t=%s: %s ready again", time.Since(start).Round(time.Millisecond), name)
	}
}

// TestPipeline_survivesRedisRestart SIGKILLs the pipeline's redis-server
// during the load and starts it again a second later. Redis runs with an
// append-only file fsynced on every write, so the restart keeps the dedup
// and storm state; while it is away the deduper and the aggregator nak and
// wait.
func TestPipeline_survivesRedisRestart(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{PersistentRedis: true})
	crashRun(t, p, crashLoad(), func() {
		start := time.Now()
		for _, d := range []time.Duration{5 * time.Second, 13 * time.Second} {
			at(start, d)
			t.Logf("t=%s: kill -9 redis-server", time.Since(start).Round(time.Millisecond))
			p.RestartRedis(time.Second)
			t.Logf("t=%s: redis-server up again", time.Since(start).Round(time.Millisecond))
		}
	})
}

// TestPipeline_survivesNATSRestart SIGKILLs nats-server during the load and
// starts it again on the same store a second later: the receiver answers
// 503 meanwhile (the sender retries), the workers reconnect, and JetStream
// recovers streams and consumers from disk.
func TestPipeline_survivesNATSRestart(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{})
	crashRun(t, p, crashLoad(), func() {
		start := time.Now()
		at(start, 6*time.Second)
		t.Logf("t=%s: kill -9 nats-server", time.Since(start).Round(time.Millisecond))
		p.RestartNATS(time.Second)
		t.Logf("t=%s: nats-server up again", time.Since(start).Round(time.Millisecond))
	})
}
