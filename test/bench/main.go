// Command bench measures the distributed pipeline on this machine: the four
// stage processes, nats-server, redis-server and a real kube-apiserver
// (envtest), driven by pkg/loadgen. Each scenario runs on a fresh
// pipeline, so its numbers (and each process's CPU and memory) are its
// own. Baselines are measured in the same run: the raw JetStream
// async-publish-with-msg-id ceiling and the API server's own create rate.
//
//	KUBEBUILDER_ASSETS="$(hack/test-deps.sh | tail -n 1)" go run ./test/bench -out BENCHMARKS.md
//
// (make bench-pipeline does exactly that.) -scenario runs a subset.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/pipeline"
)

// row is one line of the results table.
type row struct {
	scenario, target, result, verdict, command string
}

// usageRow is one process's CPU and memory in one scenario.
type usageRow struct {
	scenario, process string
	cpu               time.Duration
	wall              time.Duration
	rss, peak         int64
}

type bench struct {
	tb       *pipeline.ProgramTB
	rows     []row
	usages   []usageRow
	notes    []string
	ceiling  float64 // JetStream async publish with msg-id, msgs/s
	apiRate  float64 // API server's own create rate, objects/s
	precurse int
	// profileDir, when set, receives a 10 s CPU profile of every stage
	// taken from the start of each scenario's load.
	profileDir string
}

func main() {
	out := flag.String("out", "", "write the Markdown report to this file (default: stdout only)")
	only := flag.String("scenario", "", "comma-separated scenarios to run (default all): "+strings.Join(scenarioNames(), ","))
	profiles := flag.String("profile", "", "write a 10 s CPU profile of every stage per scenario into this directory")
	flag.Parse()
	b := &bench{tb: pipeline.NewProgramTB("bench"), precurse: config.DefaultAggregator().RateThreshold, profileDir: *profiles}
	defer pipeline.RemoveBinaries()
	want := map[string]bool{}
	for s := range strings.SplitSeq(*only, ",") {
		if s != "" {
			want[s] = true
		}
	}
	start := time.Now()
	for _, s := range scenarios {
		if len(want) > 0 && !want[s.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "=== %s\n", s.name)
		tb := pipeline.NewProgramTB(s.name)
		b.tb = tb
		s.run(b)
		tb.Close()
	}
	md := b.markdown(time.Since(start))
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

type scenario struct {
	name string
	run  func(b *bench)
}

var scenarios = []scenario{
	{"receiver", (*bench).receiverAlone},
	{"pipeline", (*bench).fullPipeline},
	{"duplicates", (*bench).singleDuplicates},
	{"new-incidents", (*bench).newIncidents},
	{"latency", (*bench).latency},
	{"storm", (*bench).storm},
	{"replay", (*bench).replay},
	{"finished-crs", (*bench).finishedRequests},
}

func scenarioNames() []string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.name)
	}
	return n
}

func command(s string) string {
	// The pipe is escaped: the command sits in a Markdown table cell.
	return fmt.Sprintf("`KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh \\| tail -n 1)\" go run ./test/bench -scenario %s`", s)
}

func (b *bench) add(r row) {
	fmt.Fprintf(os.Stderr, "result: %s: %s (%s)\n", r.scenario, r.result, r.verdict)
	b.rows = append(b.rows, r)
}

func (b *bench) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "note: "+s)
	b.notes = append(b.notes, s)
}

func verdict(ok bool, miss string) string {
	if ok {
		return "met"
	}
	return "missed: " + miss
}

func (b *bench) must(err error, what string) {
	if err != nil {
		b.tb.Fatalf("%s: %v", what, err)
	}
}

// snapshot reads every process's usage.
func (b *bench) snapshot(p *pipeline.Pipeline) map[string]pipeline.Usage {
	u, err := p.Usages(context.Background())
	b.must(err, "reading process usage")
	// The load generator runs in this process.
	self, err := pipeline.ProcUsage(os.Getpid())
	b.must(err, "reading the benchmark's own usage")
	u["loadgen (bench)"] = self
	return u
}

// recordUsage keeps each process's CPU over the scenario and its memory.
func (b *bench) recordUsage(scenario string, before, after map[string]pipeline.Usage, wall time.Duration) {
	names := make([]string, 0, len(after))
	for name := range after {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		a := after[name]
		b.usages = append(b.usages, usageRow{scenario: scenario, process: name, cpu: a.CPU - before[name].CPU, wall: wall, rss: a.RSS, peak: a.PeakRSS})
	}
}

// ceilingJetStream publishes n 512-byte messages asynchronously with a
// msg-id into a file stream of the pipeline's nats-server and waits for
// every ack: the ceiling the receiver's publishing is compared with.
func (b *bench) ceilingJetStream(p *pipeline.Pipeline, n int) float64 {
	ctx := context.Background()
	_, err := p.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "CEILING", Subjects: []string{"ceiling.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
	b.must(err, "creating the ceiling stream")
	defer func() { _ = p.JS.DeleteStream(ctx, "CEILING") }()
	js, err := jetstream.New(p.Bus, jetstream.WithPublishAsyncMaxPending(4096))
	b.must(err, "jetstream")
	data, header := b.ceilingMessage()
	start := time.Now()
	for i := range n {
		m := &nats.Msg{Subject: "ceiling.x", Data: data, Header: maps.Clone(header)}
		// A stall (4096 acks outstanding) waits instead of failing the run.
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprintf("c-%d", i)), jetstream.WithStallWait(time.Minute)); err != nil {
			b.must(err, "publishing to the ceiling stream")
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.tb.Fatalf("ceiling publishes not acknowledged within a minute")
	}
	rate := float64(n) / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "jetstream async publish with msg-id: %.0f msgs/s\n", rate)
	return rate
}

// ceilingMessage is one message as the receiver publishes it: a
// loadgen alert decoded and encoded as a signal, with the receiver's
// headers (the publisher adds the msg-id). A smaller message would make
// the ceiling, and so the ratio's denominator, unfairly high.
func (b *bench) ceilingMessage() ([]byte, nats.Header) {
	body, err := json.Marshal(loadgen.NewWebhook(loadgen.PodAlert("KubePodCrashLooping", "ceiling", "app-0", time.Now())))
	b.must(err, "encoding the ceiling webhook")
	batch, err := signal.NewDecoder(signal.MustFingerprinter(config.Default().Fingerprint.Labels), nil).DecodeAlertmanager(body)
	b.must(err, "decoding the ceiling webhook")
	s := &batch.Signals[0]
	data, err := signal.Encode(s)
	b.must(err, "encoding the ceiling signal")
	return data, nats.Header{
		bus.HeaderFingerprint: {s.Fingerprint},
		bus.HeaderSource:      {string(s.Source)},
		bus.HeaderTraceparent: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		bus.HeaderReceivedAt:  {s.ReceivedAt.Format(time.RFC3339Nano)},
	}
}

// receiverAlone stops the three workers and measures what the receiver
// accepts: 100-alert webhooks, all new, as fast as it answers.
func (b *bench) receiverAlone() {
	p := pipeline.Start(b.tb, pipeline.Options{})
	b.ceiling = b.ceilingJetStream(p, 200_000)
	for _, s := range []string{pipeline.Deduper, pipeline.Aggregator, pipeline.Writer} {
		p.Procs[s].Stop(10 * time.Second)
	}
	before := b.snapshot(p)
	rep, err := p.Load(context.Background(), loadgen.Config{Alerts: 200_000, BatchSize: 100, Concurrency: 8, MaxPerScope: 5, Seed: 1})
	b.must(err, "receiver load")
	after := b.snapshot(p)
	b.recordUsage("receiver", before, after, rep.Elapsed)
	ratio := rep.AcceptedPerSec / b.ceiling
	b.add(row{
		scenario: "receiver alone, 100-alert webhooks (200,000 alerts, 8 connections)",
		target:   "≥ 50,000 alerts/s and ≥ 50% of the JetStream ceiling",
		result: fmt.Sprintf("%.0f alerts/s accepted (%d errors; request p50 %s, p99 %s); JetStream async publish + msg-id ceiling %.0f msgs/s in the same run (messages shaped as the receiver publishes them); ratio %.0f%%",
			rep.AcceptedPerSec, rep.Errors, rep.P50.Round(time.Millisecond), rep.P99.Round(time.Millisecond), b.ceiling, 100*ratio),
		verdict: verdict(rep.AcceptedPerSec >= 50_000 && ratio >= 0.5, fmt.Sprintf("%.0f%% of 50,000/s", 100*rep.AcceptedPerSec/50_000)),
		command: command("receiver"),
	})
}

// drain runs a load and waits until the pipeline made exactly what it
// implies, returning the report and the time from the load's start to
// that point.
func (b *bench) drain(p *pipeline.Pipeline, cfg loadgen.Config, timeout time.Duration) (loadgen.Report, pipeline.Result, time.Duration, map[string]time.Duration) {
	ctx := context.Background()
	b.profile(p)
	start := time.Now()
	idle := map[string]time.Duration{}
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		// When each consumer first caught up after the load was sent.
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			st, err := p.Consumers(ctx)
			if err != nil {
				continue
			}
			mu.Lock()
			for name, c := range st {
				if _, ok := idle[name]; !ok && c.Idle() && time.Since(start) > time.Second {
					idle[name] = time.Since(start)
				}
				if !c.Idle() {
					delete(idle, name)
				}
			}
			mu.Unlock()
		}
	})
	rep, err := p.Load(ctx, cfg)
	b.must(err, "running the load")
	if rep.Errors > 0 {
		b.note("%d webhook errors in a load of %d requests", rep.Errors, rep.Requests)
	}
	res, err := p.WaitCheck(ctx, rep.Expected, b.precurse, timeout)
	if errors.Is(err, pipeline.ErrMismatch) {
		b.note("%v", err)
	} else {
		b.must(err, "waiting for the pipeline")
	}
	took := time.Since(start)
	close(stop)
	wg.Wait()
	return rep, res, took, idle
}

// fullPipeline: 100-alert webhooks with 70% duplicates and one storm, as
// fast as the receiver accepts; end to end is until every request exists
// with its exact count.
func (b *bench) fullPipeline() {
	p := pipeline.Start(b.tb, pipeline.Options{})
	cfg := loadgen.Config{Alerts: 50_000, BatchSize: 100, Concurrency: 4, DuplicateRatio: 0.7, StormRatio: 0.1, MaxPerScope: 5, Seed: 2}
	before := b.snapshot(p)
	m0, err := p.Metrics(context.Background(), pipeline.Writer)
	b.must(err, "writer metrics")
	rep, res, took, idle := b.drain(p, cfg, 10*time.Minute)
	after := b.snapshot(p)
	m1, err := p.Metrics(context.Background(), pipeline.Writer)
	b.must(err, "writer metrics")
	b.recordUsage("pipeline", before, after, took)
	e2e := float64(cfg.Alerts) / took.Seconds()
	b.add(row{
		scenario: "full pipeline, 100-alert webhooks, 70% duplicates, one storm (50,000 alerts, 4 connections)",
		target:   "≥ 10,000 alerts/s sustained, zero loss, counts exact",
		result: fmt.Sprintf("accepted %.0f alerts/s; end to end %.0f alerts/s (%s until every request was exact; deduper caught up at %s, aggregator %s, writer %s); %d requests for %d incidents (want %d), lost %d, duplicated %d, wrong counts %d; writer's API requests %s",
			rep.AcceptedPerSec, e2e, took.Round(100*time.Millisecond), idle[pipeline.Deduper].Round(100*time.Millisecond), idle[pipeline.Aggregator].Round(100*time.Millisecond), idle[pipeline.Writer].Round(100*time.Millisecond),
			res.Requests, rep.Expected.Incidents, res.Want, len(res.Lost), len(res.Duplicated), len(res.WrongCount), apiRequests(m0, m1)),
		verdict: verdict(e2e >= 10_000 && res.OK(), fmt.Sprintf("%.0f%% of 10,000/s", 100*e2e/10_000)),
		command: command("pipeline"),
	})
}

// singleDuplicates: single-alert POSTs, every one a repeat of the same
// incident; end to end is until the request's count equals the alerts.
func (b *bench) singleDuplicates() {
	p := pipeline.Start(b.tb, pipeline.Options{})
	cfg := loadgen.Config{Alerts: 60_000, BatchSize: 1, Concurrency: 32, DuplicateRatio: 1, MaxPerScope: 5, Seed: 3}
	before := b.snapshot(p)
	m0, err := p.Metrics(context.Background(), pipeline.Writer)
	b.must(err, "writer metrics")
	rep, res, took, idle := b.drain(p, cfg, 10*time.Minute)
	after := b.snapshot(p)
	m1, err := p.Metrics(context.Background(), pipeline.Writer)
	b.must(err, "writer metrics")
	b.recordUsage("duplicates", before, after, took)
	e2e := float64(cfg.Alerts) / took.Seconds()
	// What the writer read: the deduper publishes one event per incident
	// for the decisions it takes together.
	read := func(m pipeline.Metrics) float64 {
		return m.Sum("stormweir_worker_messages_total", func(l map[string]string) bool { return l["stage"] == pipeline.Writer })
	}
	b.add(row{
		scenario: "single-alert POSTs, all duplicates of one incident (60,000 requests, 32 connections)",
		target:   "≥ 12,000 alerts/s end to end",
		result: fmt.Sprintf("accepted %.0f alerts/s (request p50 %s, p99 %s, p99.9 %s); end to end %.0f alerts/s (%s until the one request counted every alert; deduper caught up at %s); writer read %.0f messages; requests %d (want %d), wrong counts %d",
			rep.AcceptedPerSec, rep.P50.Round(100*time.Microsecond), rep.P99.Round(100*time.Microsecond), rep.P999.Round(100*time.Microsecond), e2e, took.Round(100*time.Millisecond), idle[pipeline.Deduper].Round(100*time.Millisecond), read(m1)-read(m0), res.Requests, res.Want, len(res.WrongCount)),
		verdict: verdict(e2e >= 12_000 && res.Requests == res.Want && len(res.WrongCount) == 0, fmt.Sprintf("%.0f%% of 12,000/s", 100*e2e/12_000)),
		command: command("duplicates"),
	})
}

func (b *bench) rawCreates(p *pipeline.Pipeline, n int) float64 {
	ctx := context.Background()
	b.must(p.API.Namespace(ctx, "raw"), "creating namespace raw")
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	now := metav1.Now()
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				rr := &v1alpha1.RemediationRequest{
					ObjectMeta: metav1.ObjectMeta{Namespace: "raw", Name: fmt.Sprintf("rr-raw-%06d", i), Labels: map[string]string{v1alpha1.LabelSignal: "KubeContainerOOMKilled"}},
					Spec: v1alpha1.RemediationRequestSpec{
						Fingerprint: fmt.Sprintf("%064d", i), IncidentID: fmt.Sprintf("raw%06d", i),
						Signal:      v1alpha1.SignalRef{Name: "KubeContainerOOMKilled", Source: "alertmanager", Severity: "warning"},
						Target:      v1alpha1.Target{Kind: "Pod", Name: fmt.Sprintf("app-%06d", i), Namespace: "raw"},
						Environment: "unknown", Priority: "P2",
						Labels:     map[string]string{"alertname": "KubeContainerOOMKilled", "namespace": "raw", "pod": fmt.Sprintf("app-%06d", i)},
						FiringTime: now, ReceivedTime: now,
					},
				}
				if err := p.API.Client.Create(ctx, rr); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "raw create failed: %v\n", err)
					}
				}
			}
		})
	}
	wg.Wait()
	rate := float64(n) / time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "API server raw create rate: %.0f/s (%d failed)\n", rate, failed.Load())
	// Out of the way of the pipeline's checks.
	b.must(p.API.Client.DeleteAllOf(ctx, &v1alpha1.RemediationRequest{}, client.InNamespace("raw")), "deleting the raw requests")
	for {
		var l v1alpha1.RemediationRequestList
		b.must(p.API.Client.List(ctx, &l, client.InNamespace("raw"), client.Limit(1)), "listing the raw requests")
		if len(l.Items) == 0 {
			return rate
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// newIncidents: every alert a new incident (none forming a storm); the
// writer's CR rate against the API server's own create rate.
func (b *bench) newIncidents() {
	p := pipeline.Start(b.tb, pipeline.Options{})
	b.apiRate = b.rawCreates(p, 5000)
	cfg := loadgen.Config{Alerts: 10_000, BatchSize: 100, Concurrency: 4, MaxPerScope: 5, Seed: 4}
	before := b.snapshot(p)
	m0, err := p.Metrics(context.Background(), pipeline.Writer)
	b.must(err, "writer metrics")
	rep, res, took, _ := b.drain(p, cfg, 10*time.Minute)
	after := b.snapshot(p)
	m1, err := p.Metrics(context.Background(), pipeline.Writer)
	b.must(err, "writer metrics")
	b.recordUsage("new-incidents", before, after, took)
	created := m1.Sum("stormweir_writer_crs_created_total", nil) - m0.Sum("stormweir_writer_crs_created_total", nil)
	rate := created / took.Seconds()
	ratio := rate / b.apiRate
	b.add(row{
		scenario: "new incidents only (10,000 alerts in 100-alert webhooks, no storm)",
		target:   "≥ 215 CRs/s and ≥ 80% of the API server's own create rate",
		result: fmt.Sprintf("%.0f CRs/s (%.0f created in %s, load accepted at %.0f alerts/s; %d requests, want %d; writer's API requests %s); API server's own create rate in the same run %.0f/s (32 clients); ratio %.0f%%",
			rate, created, took.Round(100*time.Millisecond), rep.AcceptedPerSec, res.Requests, res.Want, apiRequests(m0, m1), b.apiRate, 100*ratio),
		verdict: verdict(rate >= 215 && ratio >= 0.8, fmt.Sprintf("%.0f%% of 215/s, %.0f%% of the API server's rate", 100*rate/215, 100*ratio)),
		command: command("new-incidents"),
	})
}

// finishedRequests measures the writer's memory with 0 and with 100,000
// finished requests in the cluster (terminal phase, incidents ended, as
// the writer leaves them), each time after a load of 2,000 alerts of the
// same 2,000 incidents (their requests created by the first, updated by
// the second, after a restart among the finished ones): the writer's
// memory must not grow with finished requests.
func (b *bench) finishedRequests() {
	const finished = 100_000
	p := pipeline.Start(b.tb, pipeline.Options{})
	ctx := context.Background()
	measure := func(seed uint64) (heap, rss float64) {
		// Not drain: its check lists every request, and the finished ones
		// are not the load's. Idle consumers say the load was written.
		m0, err := p.Metrics(ctx, pipeline.Writer)
		b.must(err, "writer metrics")
		rep, err := p.Load(ctx, loadgen.Config{Alerts: 2000, BatchSize: 100, Concurrency: 4, MaxPerScope: 5, Seed: seed})
		b.must(err, "running the load")
		_, err = p.WaitIdle(ctx, 5*time.Minute)
		b.must(err, "waiting for the pipeline")
		m1, err := p.Metrics(ctx, pipeline.Writer)
		b.must(err, "writer metrics")
		created := m1.Sum("stormweir_writer_crs_created_total", nil) - m0.Sum("stormweir_writer_crs_created_total", nil)
		fmt.Fprintf(os.Stderr, "load of %d alerts (%d incidents): writer created %.0f requests\n", rep.Accepted, rep.Expected.Incidents, created)
		// The least heap in use over 5 s: live data, the garbage of the
		// load mostly collected.
		heap = math.Inf(1)
		for range 10 {
			m, err := p.Metrics(ctx, pipeline.Writer)
			b.must(err, "writer metrics")
			heap = math.Min(heap, m.Value("go_memstats_heap_inuse_bytes", nil))
			time.Sleep(500 * time.Millisecond)
		}
		u, err := p.Procs[pipeline.Writer].Usage()
		b.must(err, "writer usage")
		return heap / (1 << 20), float64(u.RSS) / (1 << 20)
	}
	heap0, rss0 := measure(11)

	p.Procs[pipeline.Writer].Stop(10 * time.Second)
	start := time.Now()
	b.createFinished(p, finished)
	created := time.Since(start)
	restart := time.Now()
	p.Start(pipeline.Writer)
	ready := time.Since(restart)
	heap1, rss1 := measure(12)
	// Per finished request: a ratio over the small heap of an idle
	// writer would mostly measure that heap's noise.
	perRequest := (heap1 - heap0) * (1 << 20) / finished
	b.add(row{
		scenario: "writer memory with 100,000 finished requests in the cluster (each time after 2,000 alerts of the same 2,000 active requests)",
		target:   "flat in finished requests: ≤ 100 bytes of heap per finished request (≤ 10 MiB for 100,000)",
		result: fmt.Sprintf("writer heap in use %.1f MiB with none, %.1f MiB with %d (%.0f bytes per finished request); RSS %.0f → %.0f MiB; ready %s after its start among them (%d created in %s)",
			heap0, heap1, finished, perRequest, rss0, rss1, ready.Round(100*time.Millisecond), finished, created.Round(time.Second)),
		verdict: verdict(perRequest <= 100, fmt.Sprintf("%.0f bytes per finished request", perRequest)),
		command: command("finished-crs"),
	})
}

// createFinished creates n requests as the writer leaves them once they
// finished: a terminal phase, the ended label, a status with counts.
func (b *bench) createFinished(p *pipeline.Pipeline, n int) {
	ctx := context.Background()
	b.must(p.API.Namespace(ctx, "finished"), "creating namespace finished")
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	now := metav1.Now()
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				pod := fmt.Sprintf("app-%06d", i)
				rr := &v1alpha1.RemediationRequest{
					ObjectMeta: metav1.ObjectMeta{Namespace: "finished", Name: fmt.Sprintf("rr-done-%06d", i), Labels: map[string]string{
						v1alpha1.LabelSignal: "KubeContainerOOMKilled", v1alpha1.LabelSeverity: "warning", v1alpha1.LabelEnvironment: "unknown",
						v1alpha1.LabelPriority: "P2", v1alpha1.LabelEnded: "true",
					}},
					Spec: v1alpha1.RemediationRequestSpec{
						Fingerprint: fmt.Sprintf("%064d", i), IncidentID: fmt.Sprintf("done%06d", i),
						Signal:      v1alpha1.SignalRef{Name: "KubeContainerOOMKilled", Source: "alertmanager", Severity: "warning"},
						Target:      v1alpha1.Target{Kind: "Pod", Name: pod, Namespace: "finished"},
						Environment: "unknown", Priority: "P2",
						Labels:      map[string]string{"alertname": "KubeContainerOOMKilled", "namespace": "finished", "pod": pod, "severity": "warning"},
						Annotations: map[string]string{"summary": "container of " + pod + " was OOM killed"},
						FiringTime:  now, ReceivedTime: now,
					},
					Status: v1alpha1.RemediationRequestStatus{
						Phase: "Completed", ObservedRevision: 3,
						Occurrences: &v1alpha1.Occurrences{Count: 3, FirstSeen: now, LastSeen: now},
						Signal:      &v1alpha1.SignalStatus{State: v1alpha1.SignalResolved, ResolvedAt: &now},
					},
				}
				if err := p.API.Client.Create(ctx, rr); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "finished create failed: %v\n", err)
					}
				}
				if i%10_000 == 0 {
					fmt.Fprintf(os.Stderr, "%d finished requests created\n", i)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.tb.Fatalf("%d of %d finished requests not created", failed.Load(), n)
	}
}

// apiRequests lists the writer's API requests between two scrapes by
// method and status code, e.g. "POST 201 ×10000, PATCH 200 ×12".
func apiRequests(m0, m1 pipeline.Metrics) string {
	const name = "stormweir_writer_api_requests_total"
	var parts []string
	for _, method := range []string{"GET", "POST", "PATCH", "PUT", "DELETE"} {
		for _, code := range []string{"200", "201", "404", "409", "422", "429", "500", "503", "error"} {
			l := map[string]string{"method": method, "code": code}
			if n := m1.Value(name, l) - m0.Value(name, l); n > 0 {
				parts = append(parts, fmt.Sprintf("%s %s ×%.0f", method, code, n))
			}
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// latency: 100 new incidents a second, one alert a request, for 30 s;
// receipt → CR written from the writer's end-to-end histogram.
func (b *bench) latency() {
	p := pipeline.Start(b.tb, pipeline.Options{})
	ctx := context.Background()
	m0, err := p.Metrics(ctx, pipeline.Writer)
	b.must(err, "writer metrics")
	cfg := loadgen.Config{Alerts: 3000, BatchSize: 1, Rate: 100, Concurrency: 8, MaxPerScope: 5, Seed: 5}
	before := b.snapshot(p)
	_, res, took, _ := b.drain(p, cfg, 5*time.Minute)
	after := b.snapshot(p)
	b.recordUsage("latency", before, after, took)
	m1, err := p.Metrics(ctx, pipeline.Writer)
	b.must(err, "writer metrics")
	h := m1.Histogram("stormweir_writer_e2e_latency_seconds").Minus(m0.Histogram("stormweir_writer_e2e_latency_seconds"))
	p50, p99, p999 := h.Quantile(0.5), h.Quantile(0.99), h.Quantile(0.999)
	ms := func(s float64) string { return fmt.Sprintf("%.1f ms", s*1000) }
	b.add(row{
		scenario: "receipt → CR written at 100 new incidents/s (3,000 single-alert POSTs over 30 s)",
		target:   "p50 ≤ 50 ms, p99 ≤ 100 ms, p99.9 ≤ 250 ms",
		result: fmt.Sprintf("p50 %s, p99 %s, p99.9 %s (stormweir_writer_e2e_latency_seconds, %d writes, interpolated in exponential buckets: %s); %d requests, want %d",
			ms(p50), ms(p99), ms(p999), int(h.Count), h.Buckets(), res.Requests, res.Want),
		verdict: verdict(p50 <= 0.05 && p99 <= 0.1 && p999 <= 0.25, fmt.Sprintf("p50 %.1fx, p99 %.1fx, p99.9 %.1fx the target", p50/0.05, p99/0.1, p999/0.25)),
		command: command("latency"),
	})
}

// storm: 100,000 alerts of one storm in 60 s; counts the API server's
// writes to RemediationRequests and the stages' memory under it.
func (b *bench) storm() {
	p := pipeline.Start(b.tb, pipeline.Options{})
	ctx := context.Background()
	a0, err := p.API.Metrics(ctx)
	b.must(err, "API server metrics")
	cfg := loadgen.Config{Alerts: 100_000, BatchSize: 100, Rate: 100_000.0 / 60, Concurrency: 4, DuplicateRatio: 0.9, StormRatio: 1, Seed: 6}
	before := b.snapshot(p)
	m0, err := p.Metrics(ctx, pipeline.Writer)
	b.must(err, "writer metrics")
	peak := map[string]int64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			for _, s := range pipeline.Stages {
				if u, err := p.Procs[s].Usage(); err == nil {
					peak[s] = max(peak[s], u.RSS)
				}
			}
		}
	})
	rep, res, took, _ := b.drain(p, cfg, 10*time.Minute)
	close(stop)
	wg.Wait()
	after := b.snapshot(p)
	b.recordUsage("storm", before, after, took)
	a1, err := p.API.Metrics(ctx)
	b.must(err, "API server metrics")
	writes := pipeline.RequestWrites(a1) - pipeline.RequestWrites(a0)
	m1, err := p.Metrics(ctx, pipeline.Writer)
	b.must(err, "writer metrics")
	b.add(row{
		scenario: "one storm: 100,000 alerts in 60 s (100-alert webhooks, 90% repeats, 10,000 pods)",
		target:   "1 storm CR (+ precursors), ≤ 200 API writes",
		result: fmt.Sprintf("%d storm CR, %d precursors, %d requests (want %d); storm members %d (want %d), occurrences %d (want %d); %.0f API writes to RemediationRequests (apiserver_request_total; writer's requests %s; %s); accepted %.0f alerts/s, settled after %s",
			res.StormRequests, res.Precursors, res.Requests, res.Want, res.StormMembers, res.WantStormMembers, res.StormOccurrences, res.WantStormOccurrences, writes, apiRequests(m0, m1), b.generations(p), rep.AcceptedPerSec, took.Round(100*time.Millisecond)),
		verdict: verdict(res.OK() && writes <= 200, fmt.Sprintf("%.0f writes", writes)),
		command: command("storm"),
	})
	var parts []string
	worst := int64(0)
	for _, s := range pipeline.Stages {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", s, float64(peak[s])/(1<<20)))
		worst = max(worst, peak[s])
	}
	b.add(row{
		scenario: "RSS per stage process under the storm load (sampled every second)",
		target:   "≤ 100 MiB per stage",
		result:   "peak " + strings.Join(parts, ", "),
		verdict:  verdict(worst <= 100<<20, fmt.Sprintf("%.0f MiB", float64(worst)/(1<<20))),
		command:  command("storm"),
	})
}

// generations sums metadata.generation over the storm's requests and over
// the others: each write that changed a request raises it by one (status
// is not a subresource), so it says where the writes went.
func (b *bench) generations(p *pipeline.Pipeline) string {
	var l v1alpha1.RemediationRequestList
	b.must(p.API.Client.List(context.Background(), &l), "listing requests")
	var storm, other, n int64
	for _, rr := range l.Items {
		if rr.Spec.Storm != nil {
			storm += rr.Generation
		} else {
			other += rr.Generation
			n++
		}
	}
	return fmt.Sprintf("generations: storm %d, the %d others %d", storm, n, other)
}

func (b *bench) markdown(total time.Duration) string {
	var s strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&s, "# Benchmarks\n\n")
	fmt.Fprintf(&s, "The distributed pipeline on one 2-core machine (%s), everything co-located: the four stage processes, nats-server (JetStream, file storage), redis-server (no persistence), kube-apiserver + etcd (envtest) and the load generator. Each scenario runs on a fresh pipeline. Generated by `make bench-pipeline` (`go run ./test/bench -out BENCHMARKS.md`) in %s on %s.\n\n",
		host, total.Round(time.Second), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&s, "| scenario | target | result | verdict | command |\n|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n", r.scenario, r.target, r.result, r.verdict, r.command)
	}
	fmt.Fprintf(&s, "\n## CPU and memory per process\n\nCPU is the process's CPU time over the scenario (from the load's start until the pipeline settled) and its average share of one core; RSS at the end of the scenario and, for processes the harness started, the peak (VmHWM).\n\n")
	fmt.Fprintf(&s, "| scenario | process | CPU | cores | RSS | peak RSS |\n|---|---|---|---|---|---|\n")
	for _, u := range b.usages {
		peak := "–"
		if u.peak > 0 {
			peak = fmt.Sprintf("%.0f MiB", float64(u.peak)/(1<<20))
		}
		fmt.Fprintf(&s, "| %s | %s | %.1f s | %.2f | %.0f MiB | %s |\n", u.scenario, u.process, u.cpu.Seconds(), u.cpu.Seconds()/math.Max(u.wall.Seconds(), 1e-9), float64(u.rss)/(1<<20), peak)
	}
	if len(b.notes) > 0 {
		fmt.Fprintf(&s, "\n## Notes from the run\n\n")
		for _, n := range b.notes {
			fmt.Fprintf(&s, "- %s\n", n)
		}
	}
	return s.String()
}

// profile fetches a 10 s CPU profile of every stage and of the API server
// in the background, named <scenario-seq>-<process>.pprof, then a heap
// profile of each stage (<scenario-seq>-<stage>.heap.pprof), when -profile
// is set.
func (b *bench) profile(p *pipeline.Pipeline) {
	if b.profileDir == "" {
		return
	}
	if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
		b.notes = append(b.notes, "profile: "+err.Error())
		return
	}
	seq := len(b.rows)
	fetch := func(url, file string) {
		resp, err := http.Get(url)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(b.profileDir, file))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}
	go func() {
		f, err := os.Create(filepath.Join(b.profileDir, fmt.Sprintf("%d-kube-apiserver.pprof", seq)))
		if err != nil {
			return
		}
		defer f.Close()
		_ = p.API.Profile(context.Background(), 10, f)
	}()
	for _, name := range pipeline.Stages {
		proc := p.Procs[name]
		go func() {
			fetch(proc.HealthURL+"/debug/pprof/profile?seconds=10", fmt.Sprintf("%d-%s.pprof", seq, name))
			fetch(proc.HealthURL+"/debug/pprof/heap", fmt.Sprintf("%d-%s.heap.pprof", seq, name))
		}()
	}
}
