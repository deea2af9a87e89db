// Package pipeline runs the distributed stormweir pipeline on one machine
// for the crash tests and the pipeline benchmark: the four stage binaries
// (built once per run from the working tree) as separate processes, a
// nats-server process with JetStream, a redis-server of its own and a real
// kube-apiserver with etcd (envtest). Any process can be SIGKILLed and
// started again; NATS and Redis restart on the same port with the same
// store, so a restart is a real outage followed by recovery.
//
// It also reads what the checks need: JetStream consumer state (to wait
// for quiescence), the DLQ, each process's /metrics and /proc usage, and
// the RemediationRequests in the API server.
package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/test/testenv"
)

// Options shape a pipeline.
type Options struct {
	// Config adjusts the stages' configuration after the harness's
	// defaults (see Start).
	Config func(*config.Config)
	// PersistentRedis runs Redis with an append-only file fsynced on every
	// write (--appendonly yes --appendfsync always), so a Redis restart
	// keeps the dedup and storm state, as a production Redis with
	// persistence or a replica would. Without it a restart empties Redis.
	PersistentRedis bool
	// Secured runs the bus and the store as a secured deployment does:
	// nats-server with deploy/nats/nats-server.conf as shipped (each stage
	// connects as its own user of accounts.conf, with a password file, and
	// only the writer manages the streams) over mutual TLS, and Redis with
	// a password file over mutual TLS; the certificates come from a CA
	// generated for the run. The bus prefix is then "stormweir", the one
	// accounts.conf names.
	Secured bool
	// Replicas sets how many processes of a stage run, by stage name (one
	// when absent). The first replica of a stage is named after the stage
	// (Receiver, Deduper, ...), the others "<stage>-2", "<stage>-3", ...
	// Several receivers sit behind one balancer, as behind a Service.
	Replicas map[string]int
	// NATSCluster runs three clustered nats-server processes instead of
	// one, with every stream (and so every consumer) replicated on all
	// three (R3); the stages get the three URLs.
	NATSCluster bool
	// Redis picks the topology of the pipeline's own Redis: RedisSingle
	// (one redis-server), RedisSentinel (a master, a replica and three
	// Sentinels) or RedisCluster (three masters with a replica each).
	Redis string
	// Namespaces are created in the API server before the stages start;
	// the loadgen namespaces, loadgen.StormNamespace and the writer's
	// fallback namespace are always created.
	Namespaces []string
}

// Redis topologies (Options.Redis).
const (
	RedisSingle   = ""
	RedisSentinel = "sentinel"
	RedisCluster  = "cluster"
)

// SentinelMaster is the name the Sentinels of a RedisSentinel pipeline
// monitor their master as.
const SentinelMaster = "stormweir"

// Pipeline is one running distributed pipeline.
type Pipeline struct {
	// Dir holds the configuration file, the kubeconfig, the NATS store and
	// every process's log.
	Dir string
	// Config is what the stages run with (receiver tokens included).
	Config config.Config
	// Token authenticates webhooks at the receiver.
	Token string
	// ReceiverURL is the receiver's base URL.
	ReceiverURL string
	// NATSURL is the nats-server client URL (stable across restarts;
	// the three URLs, comma-separated, of a cluster).
	NATSURL string
	// NATS is the nats-server process (the first node of a cluster).
	NATS *Process
	// NATSNodes are the nodes of a cluster (NATS alone otherwise).
	NATSNodes []*Process
	// Redis is the pipeline's own redis-server (with RedisSentinel the
	// first master; with RedisCluster a node of RedisCluster).
	Redis *testenv.RedisServer
	// RedisReplica is the master's replica of a RedisSentinel pipeline,
	// and Sentinels its Sentinels.
	RedisReplica *testenv.RedisServer
	Sentinels    []*testenv.RedisServer
	// RedisCluster is the cluster of a RedisCluster pipeline.
	RedisCluster *testenv.RedisCluster
	// API is the Kubernetes API server the writer writes to.
	API *APIServer
	// Procs are the stage processes by name (Receiver, Deduper, ...;
	// "<stage>-2" and on for further replicas).
	Procs map[string]*Process
	// Names lists Procs' names in start order.
	Names []string
	// Bus is the harness's own connection, for consumer state, the DLQ
	// and JetStream measurements; it reconnects across NATS restarts.
	Bus *nats.Conn
	JS  jetstream.JetStream

	tb       testing.TB
	balancer *balancer
	subj     bus.Subjects
	storeJS  string
	http     *http.Client
	// natsOpts are the harness's own credentials and TLS for NATS.
	natsOpts []nats.Option
}

// Start starts NATS, Redis, the API server and the four stages, waits
// until every stage is ready, and stops everything at the test's cleanup.
//
// The harness's configuration departs from the defaults where a test on
// one machine needs it, and only there: AckWait 5s without a server-side
// BackOff and retry delays up to 5s (a killed stage's messages come back
// in seconds, not minutes); writer QPS 1000 / burst 2000 (the API server is
// local; the default 50 QPS is for shared clusters); a drain budget of 5s;
// unique bus and Redis key prefixes.
func Start(tb testing.TB, o Options) *Pipeline {
	tb.Helper()
	bins, err := binaries()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	id := testenv.RandomID()[:8]
	dir := tb.TempDir()
	p := &Pipeline{
		Dir:   dir,
		Token: "pipeline-token-" + id + "-0123456789",
		Procs: map[string]*Process{},
		tb:    tb,
		http:  &http.Client{Timeout: 10 * time.Second},
	}

	// Secrets and certificates of a secured run.
	var sec *secrets
	if o.Secured {
		sec = newSecrets(tb, dir)
		p.natsOpts = sec.harnessNATS()
	}

	// NATS.
	if o.NATSCluster && sec != nil {
		tb.Fatalf("pipeline: a secured NATS cluster is not supported")
	}
	p.storeJS = filepath.Join(dir, "jetstream")
	if o.NATSCluster {
		p.startNATSCluster(bins, dir, 3)
	} else {
		natsPort := testenv.FreePort(tb)
		p.NATSURL = "nats://127.0.0.1:" + strconv.Itoa(natsPort)
		p.NATS = &Process{
			Name: natsServer,
			Log:  filepath.Join(dir, "nats-server.log"),
			URL:  p.NATSURL,
			bin:  filepath.Join(bins, natsServer),
			args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", p.storeJS, "--name", "stormweir-pipeline"},
		}
		if sec != nil {
			p.NATS.args = []string{"-c", sec.natsConfig(dir, p.storeJS), "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "--name", "stormweir-pipeline"}
			p.NATS.env = sec.natsEnv()
		}
		p.NATSNodes = []*Process{p.NATS}
		p.startNATS(p.NATS)
	}
	for _, n := range p.NATSNodes {
		tb.Cleanup(func() { n.Stop(10 * time.Second) })
	}
	nc, err := nats.Connect(p.NATSURL, append([]nats.Option{nats.Name("stormweir-pipeline-harness"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond), nats.RetryOnFailedConnect(true)}, p.natsOpts...)...)
	if err != nil {
		tb.Fatalf("connecting to nats-server: %v", err)
	}
	tb.Cleanup(nc.Close)
	p.Bus = nc
	if p.JS, err = jetstream.New(nc); err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	p.waitJetStream(30 * time.Second)

	// Redis.
	var redisArgs []string
	if o.PersistentRedis {
		redisArgs = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	switch {
	case o.Redis != RedisSingle && sec != nil:
		tb.Fatalf("pipeline: a secured Redis %s is not supported", o.Redis)
	case o.Redis == RedisSentinel:
		p.Redis = testenv.StartRedisServer(tb, redisArgs...)
		p.RedisReplica = testenv.StartRedisServer(tb, append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(p.Redis.Port)}, redisArgs...)...)
		p.Sentinels = testenv.StartRedisSentinels(tb, p.Redis, SentinelMaster, 3, 1)
	case o.Redis == RedisCluster:
		p.RedisCluster = testenv.StartRedisCluster(tb, 3)
		p.Redis = p.RedisCluster.Nodes[0]
	case o.Redis != RedisSingle:
		tb.Fatalf("pipeline: unknown Redis topology %q", o.Redis)
	case sec != nil:
		p.Redis = testenv.StartSecureRedisServer(tb, sec.redis, redisArgs...)
	default:
		p.Redis = testenv.StartRedisServer(tb, redisArgs...)
	}

	// API server.
	p.API, err = StartAPIServer(dir)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { _ = p.API.Stop() })

	// Configuration shared by the stages.
	cfg := config.Default()
	cfg.Log.Level = "info"
	cfg.Bus.URL = p.NATSURL
	cfg.Bus.Prefix = "swp-" + id
	cfg.Bus.Consumer.AckWait = 5 * time.Second
	cfg.Bus.Consumer.BackOff = nil
	cfg.Bus.Consumer.RetryDelays = []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}
	cfg.Redis.Addrs = []string{p.Redis.Addr}
	switch o.Redis {
	case RedisSentinel:
		cfg.Redis.Mode, cfg.Redis.MasterName, cfg.Redis.Addrs = "sentinel", SentinelMaster, nil
		for _, s := range p.Sentinels {
			cfg.Redis.Addrs = append(cfg.Redis.Addrs, s.Addr)
		}
	case RedisCluster:
		cfg.Redis.Mode, cfg.Redis.Addrs = "cluster", p.RedisCluster.Addrs()
	}
	if o.NATSCluster {
		for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ, &cfg.Bus.Archive.Signals, &cfg.Bus.Archive.Incidents} {
			s.Replicas = len(p.NATSNodes)
		}
	}
	cfg.Redis.KeyPrefix = "swp-" + id
	cfg.Worker.DrainTimeout = 5 * time.Second
	cfg.Writer.Kubeconfig = p.API.Kubeconfig
	cfg.Writer.QPS, cfg.Writer.Burst = 1000, 2000
	if sec != nil {
		sec.configure(&cfg)
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	cfg.Receiver.Auth.Tokens = []string{p.Token}
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("pipeline configuration: %v", err)
	}
	p.Config = cfg
	p.subj = bus.NewSubjects(cfg.Bus.Prefix)
	fileCfg := cfg
	fileCfg.Receiver.Auth.Tokens = nil // passed in the environment, not on disk
	b, err := yaml.Marshal(fileCfg)
	if err != nil {
		tb.Fatalf("encoding the stage configuration: %v", err)
	}
	cfgPath := filepath.Join(dir, "stormweir.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		tb.Fatalf("writing %s: %v", cfgPath, err)
	}

	ctx := context.Background()
	nss := append([]string{loadgen.StormNamespace, cfg.Writer.FallbackNamespace, "payments", "checkout", "search", "identity"}, o.Namespaces...)
	for _, ns := range nss {
		if err := p.API.Namespace(ctx, ns); err != nil {
			tb.Fatalf("%v", err)
		}
	}

	// Stages: the writer first (in a secured account it alone creates the
	// streams the others wait for), the receiver last, so nothing is
	// accepted before every consumer exists (not required, but tidy).
	var receivers []string
	for _, stage := range []string{Writer, Deduper, Aggregator, Receiver} {
		for i := range max(o.Replicas[stage], 1) {
			name := stage
			if i > 0 {
				name = fmt.Sprintf("%s-%d", stage, i+1)
			}
			port := strconv.Itoa(testenv.FreePort(tb))
			// pprof on every stage's health port, so a benchmark can
			// profile the bottleneck of a run.
			env := []string{"STORMWEIR_CONFIG=" + cfgPath, "STORMWEIR_DEBUG_PPROF=true"}
			proc := &Process{Name: name, Stage: stage, Log: filepath.Join(dir, name+".log"), bin: filepath.Join(bins, stage)}
			if stage == Receiver {
				env = append(env, "STORMWEIR_RECEIVER_LISTEN=127.0.0.1:"+port, "STORMWEIR_RECEIVER_AUTH_TOKENS="+p.Token)
				receivers = append(receivers, "127.0.0.1:"+port)
			} else {
				env = append(env, "STORMWEIR_WORKER_LISTEN=127.0.0.1:"+port)
			}
			if sec != nil {
				env = append(env, sec.stageEnv(stage)...)
			}
			proc.HealthURL = "http://127.0.0.1:" + port
			proc.env = env
			p.Procs[name] = proc
			p.Names = append(p.Names, name)
			tb.Cleanup(func() { proc.Stop(10 * time.Second) })
			p.Start(name)
		}
	}
	p.ReceiverURL = "http://" + receivers[0]
	if len(receivers) > 1 {
		if p.balancer, err = startBalancer(receivers); err != nil {
			tb.Fatalf("%v", err)
		}
		tb.Cleanup(p.balancer.Close)
		p.ReceiverURL = "http://" + p.balancer.Addr()
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			p.logTails()
		}
	})
	return p
}

func (p *Pipeline) logTails() {
	for _, name := range p.Names {
		proc := p.Procs[name]
		warn := proc.Grep(`"level":"ERROR"`)
		if len(warn) > 20 {
			warn = warn[len(warn)-20:]
		}
		p.tb.Logf("%s (log %s): %d starts; last errors:\n%s\nlast lines:\n%s", name, proc.Log, proc.Starts,
			strings.Join(warn, "\n"), proc.Tail(15))
	}
}

// Start starts stage name (again) and waits until its /readyz answers 200.
func (p *Pipeline) Start(name string) {
	p.tb.Helper()
	proc := p.Procs[name]
	if err := proc.start(); err != nil {
		p.tb.Fatalf("%v", err)
	}
	if err := proc.waitReady(proc.HealthURL+"/readyz", 90*time.Second); err != nil {
		p.tb.Fatalf("%v", err)
	}
}

// Kill SIGKILLs stage name.
func (p *Pipeline) Kill(name string) { p.Procs[name].Kill() }

// Restart SIGKILLs stage name, starts it again and waits until it is
// ready.
func (p *Pipeline) Restart(name string) {
	p.tb.Helper()
	p.Kill(name)
	p.Start(name)
}

// startNATS starts node n and waits until it accepts connections.
func (p *Pipeline) startNATS(n *Process) {
	p.tb.Helper()
	if err := n.start(); err != nil {
		p.tb.Fatalf("%v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(n.URL, append([]nats.Option{nats.Timeout(time.Second)}, p.natsOpts...)...)
		if err == nil {
			nc.Close()
			return
		}
		if n.Exited() || time.Now().After(deadline) {
			p.tb.Fatalf("%s did not come up at %s: %v; log:\n%s", n.Name, n.URL, err, n.Tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RestartNATS SIGKILLs nats-server and starts it again on the same port
// with the same store directory; JetStream recovers the streams and
// consumers from disk.
func (p *Pipeline) RestartNATS(down time.Duration) {
	p.tb.Helper()
	p.NATS.Kill()
	time.Sleep(down)
	p.startNATS(p.NATS)
}

// RestartRedis SIGKILLs redis-server and starts it again on the same port
// and directory (with PersistentRedis the append-only file brings the
// state back).
func (p *Pipeline) RestartRedis(down time.Duration) {
	p.tb.Helper()
	p.Redis.Stop()
	time.Sleep(down)
	p.Redis.Start()
}

// WebhookURL is the receiver's Alertmanager endpoint.
func (p *Pipeline) WebhookURL() string { return p.ReceiverURL + receiver.PathAlertmanager }

// Load fills in the receiver URL and token and runs loadgen.
func (p *Pipeline) Load(ctx context.Context, cfg loadgen.Config) (loadgen.Report, error) {
	cfg.URL, cfg.Token = p.WebhookURL(), p.Token
	return loadgen.Run(ctx, cfg, nil)
}

// Subjects are the pipeline's subjects and stream names.
func (p *Pipeline) Subjects() bus.Subjects { return p.subj }

// ConsumerState is one durable consumer's backlog.
type ConsumerState struct {
	// Pending counts stream messages not yet delivered.
	Pending uint64
	// AckPending counts delivered, unacknowledged messages (in flight or
	// waiting for redelivery).
	AckPending int
	// Redelivered counts messages delivered more than once and pending.
	Redelivered int
}

// Idle reports whether nothing waits for the consumer.
func (c ConsumerState) Idle() bool { return c.Pending == 0 && c.AckPending == 0 }

// consumers are the pipeline's durables and their streams.
var consumers = []struct{ durable, stream string }{
	{Deduper, bus.StreamSignals},
	{Aggregator, bus.StreamIncidents},
	{Writer, bus.StreamIncidents},
}

// Consumers returns the state of the three durables (deduper,
// aggregator, writer).
func (p *Pipeline) Consumers(ctx context.Context) (map[string]ConsumerState, error) {
	out := map[string]ConsumerState{}
	for _, c := range consumers {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := p.JS.Consumer(cctx, p.subj.StreamName(c.stream), c.durable)
		if err == nil {
			var info *jetstream.ConsumerInfo
			info, err = cons.Info(cctx)
			if err == nil {
				out[c.durable] = ConsumerState{Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered}
			}
		}
		cancel()
		if err != nil {
			return nil, fmt.Errorf("reading consumer %s: %w", c.durable, err)
		}
	}
	return out, nil
}

// WaitIdle polls the consumers until every one is idle on three polls in
// a row (half a second apart), or timeout passes.
func (p *Pipeline) WaitIdle(ctx context.Context, timeout time.Duration) (map[string]ConsumerState, error) {
	deadline := time.Now().Add(timeout)
	streak := 0
	var last map[string]ConsumerState
	var lastErr error
	for {
		st, err := p.Consumers(ctx)
		if err == nil {
			last, lastErr = st, nil
			idle := true
			for _, c := range st {
				idle = idle && c.Idle()
			}
			if idle {
				streak++
			} else {
				streak = 0
			}
			if streak >= 3 {
				return st, nil
			}
		} else {
			lastErr, streak = err, 0
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("pipeline not idle within %s: consumers %+v, last error %v", timeout, last, lastErr)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// DLQ counts the messages in the pipeline's DLQ stream.
func (p *Pipeline) DLQ(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := p.JS.Stream(ctx, p.subj.StreamName(bus.StreamDLQ))
	if err != nil {
		return 0, fmt.Errorf("reading the DLQ stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the DLQ stream: %w", err)
	}
	return info.State.Msgs, nil
}

// Metrics scrapes stage name's /metrics.
func (p *Pipeline) Metrics(ctx context.Context, name string) (Metrics, error) {
	return Scrape(ctx, p.http, p.Procs[name].HealthURL+"/metrics")
}

// Usages reads every pipeline process's CPU time and memory: the stages
// from their /metrics (process_cpu_seconds_total,
// process_resident_memory_bytes) with the peak from /proc, nats-server
// from /proc, redis-server from INFO, kube-apiserver and etcd from their
// /metrics.
func (p *Pipeline) Usages(ctx context.Context) (map[string]Usage, error) {
	out := map[string]Usage{}
	fromMetrics := func(m Metrics) Usage {
		return Usage{
			CPU: time.Duration(m.Sum("process_cpu_seconds_total", nil) * float64(time.Second)),
			RSS: int64(m.Sum("process_resident_memory_bytes", nil)),
		}
	}
	for _, name := range p.Names {
		if p.Procs[name].Pid() == 0 {
			continue // stopped
		}
		m, err := p.Metrics(ctx, name)
		if err != nil {
			return nil, err
		}
		u := fromMetrics(m)
		if pu, err := p.Procs[name].Usage(); err == nil {
			u.PeakRSS = pu.PeakRSS
		}
		out[name] = u
	}
	u, err := p.NATS.Usage()
	if err != nil {
		return nil, err
	}
	out[natsServer] = u
	rc := redis.NewClient(p.Redis.Security.Options(p.tb, p.Redis.Addr))
	defer rc.Close()
	info, err := rc.Info(ctx, "cpu", "memory").Result()
	if err != nil {
		return nil, fmt.Errorf("reading redis INFO: %w", err)
	}
	var ru Usage
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		f, _ := strconv.ParseFloat(v, 64)
		switch k {
		case "used_cpu_sys", "used_cpu_user":
			ru.CPU += time.Duration(f * float64(time.Second))
		case "used_memory_rss":
			ru.RSS = int64(f)
		}
	}
	out["redis-server"] = ru
	if m, err := p.API.Metrics(ctx); err == nil {
		out["kube-apiserver"] = fromMetrics(m)
	}
	if m, err := p.API.EtcdMetrics(ctx); err == nil {
		out["etcd"] = fromMetrics(m)
	}
	return out, nil
}
