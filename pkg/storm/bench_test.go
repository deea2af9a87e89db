package storm_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/pkg/storm/stormtest"
	"github.com/stormweir/stormweir/test/testenv"
)

// benchParallelism is goroutines per core for both measurements: Redis
// calls are round-trip bound, so the ceiling needs many in flight.
const benchParallelism = 16

// ceilingScript is DESIGN §10's reference EVALSHA: SET NX + INCR + EXPIRE.
var ceilingScript = redis.NewScript(`
redis.call('SET', KEYS[1], '1', 'NX')
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 60000)
return 1`)

// evalshaCeiling measures unpipelined EVALSHA/s of ceilingScript with the
// same concurrency the benchmark uses, in the same run.
func evalshaCeiling(b *testing.B, c *redis.Client, prefix string, n int) float64 {
	b.Helper()
	ctx := context.Background()
	workers := benchParallelism * runtime.GOMAXPROCS(0)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprintf("%s:ceiling:%d", prefix, w)
			for next.Add(1) <= int64(n) {
				if err := ceilingScript.Run(ctx, c, []string{key}).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// benchSignal is a realistic encoded signal (a KubePodCrashLooping alert,
// about 1.3 KB), as observations carry it.
func benchSignal(b *testing.B) []byte {
	b.Helper()
	batch, err := signal.NewDecoder(signal.MustFingerprinter(signal.DefaultFingerprintFields), nil).
		DecodeAlertmanager(loadgen.NewWebhook(loadgen.PodAlert("KubePodCrashLooping", "shop", "web-0", time.Now())).JSON())
	require.NoError(b, err)
	raw, err := signal.Encode(&batch.Signals[0])
	require.NoError(b, err)
	return raw
}

// BenchmarkRedisStore_observe measures aggregator decisions/s (one
// Observe of a new incident, as the stage makes per dedup.new) during
// storms in 16 scopes, against the in-run EVALSHA ceiling, and the CPU
// time per decision of the client and of its own Redis server.
func BenchmarkRedisStore_observe(b *testing.B) {
	r := testenv.OwnRedis(b)
	s := storm.NewRedisStore(r.Client, r.Prefix, 0)
	ctx := context.Background()
	sig := benchSignal(b)
	ceiling := evalshaCeiling(b, r.Client, r.Prefix, max(b.N, 20000))
	scopes := make([]storm.Scope, 16)
	for i := range scopes {
		scopes[i] = stormtest.Scope("KubePodCrashLooping", fmt.Sprintf("ns-%d", i))
	}
	now := time.Now()
	var seq atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	cpu := testenv.ReadCPU(b, r.Client)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			inc := fmt.Sprintf("inc-%d", i)
			sc := scopes[i%int64(len(scopes))]
			_, err := s.Observe(ctx, storm.Observation{
				Type: incident.StormRate, Scope: sc, IncidentID: inc, Unit: inc,
				Target: signal.Target{Kind: "Pod", Name: inc, Namespace: sc.Values["namespace"]}, Count: 1,
				Threshold: 10, Window: time.Minute, Inactivity: time.Minute, MaxDuration: time.Hour,
				Signal: sig, Now: now,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	testenv.ReportCPU(b, r.Client, cpu)
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "decisions/s")
	b.ReportMetric(ceiling, "evalsha/s")
	b.ReportMetric(rate/ceiling, "ratio")
}

// BenchmarkRedisStore_track measures aggregator decisions/s for storm
// members' repeats (one Track per dedup.member, the bulk of a storm with
// duplicates): 16 open storms of 200 members each, every repeat raising
// a member's count, against the in-run EVALSHA ceiling, and the CPU time
// per decision of the client and of its own Redis server.
func BenchmarkRedisStore_track(b *testing.B) {
	r := testenv.OwnRedis(b)
	s := storm.NewRedisStore(r.Client, r.Prefix, 0)
	ctx := context.Background()
	ceiling := evalshaCeiling(b, r.Client, r.Prefix, max(b.N, 20000))
	const members = 200
	now := time.Now()
	storms := make([]string, 16)
	for i := range storms {
		sc := stormtest.Scope("KubePodCrashLooping", fmt.Sprintf("ns-%d", i))
		for m := range members {
			inc := fmt.Sprintf("inc-%d-%d", i, m)
			d, err := s.Observe(ctx, storm.Observation{
				Type: incident.StormRate, Scope: sc, IncidentID: inc, Unit: inc,
				Target: signal.Target{Kind: "Pod", Name: inc, Namespace: sc.Values["namespace"]}, Count: 1,
				Threshold: 10, Window: time.Minute, Inactivity: time.Minute, MaxDuration: time.Hour,
				Signal: []byte(`{"name":"KubePodCrashLooping"}`), Now: now,
			})
			if err != nil {
				b.Fatal(err)
			}
			storms[i] = d.Storm.ID
		}
	}
	var seq atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	cpu := testenv.ReadCPU(b, r.Client)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			st, m := i%int64(len(storms)), (i/int64(len(storms)))%members
			_, err := s.Track(ctx, storm.MemberUpdate{
				StormID: storms[st], IncidentID: fmt.Sprintf("inc-%d-%d", st, m), Count: 2 + i/(int64(len(storms))*members), Now: now,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	testenv.ReportCPU(b, r.Client, cpu)
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "decisions/s")
	b.ReportMetric(ceiling, "evalsha/s")
	b.ReportMetric(rate/ceiling, "ratio")
}

// benchStage is an aggregator on in-memory stores, for measuring its own
// work per message (Redis is measured above).
func benchStage(b *testing.B) (*storm.Stage, bus.Subjects, record.Store) {
	b.Helper()
	n := testenv.StartNATS(b)
	cfg := testenv.Config(n.URL)
	require.NoError(b, cfg.Validate())
	ctx := context.Background()
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), app.Aggregator, app.Options{MemoryStores: true})
	require.NoError(b, err)
	b.Cleanup(a.Close)
	agg, err := a.Aggregator(ctx)
	require.NoError(b, err)
	records, err := a.Incidents()
	require.NoError(b, err)
	return agg, bus.NewSubjects(cfg.Bus.Prefix), records
}

// benchEvents decides n realistic KubePodCrashLooping alerts (pod i in
// namespace(i)) in records and returns the deduper's new-incident events.
func benchEvents(b *testing.B, records record.Decider, n int, namespace func(i int) string) []incident.Event {
	b.Helper()
	alerts := make([]loadgen.Alert, n)
	for i := range alerts {
		alerts[i] = loadgen.PodAlert("KubePodCrashLooping", namespace(i), fmt.Sprintf("web-%d", i), time.Now())
	}
	batch, err := signal.NewDecoder(signal.MustFingerprinter(signal.DefaultFingerprintFields), nil).
		DecodeAlertmanager(loadgen.NewWebhook(alerts...).JSON())
	require.NoError(b, err)
	evs := make([]incident.Event, n)
	for i := range batch.Signals {
		s := &batch.Signals[i]
		raw, err := signal.Encode(s)
		require.NoError(b, err)
		h := s.Head()
		res, err := records.Decide(context.Background(), &h, s.ID)
		require.NoError(b, err)
		evs[i] = incident.Event{Decision: res.Decision, Signal: raw}
		record.Refresh(&evs[i], &res.Record)
	}
	return evs
}

func benchMsg(b *testing.B, subject string, ev *incident.Event) *bus.Msg {
	data, err := incident.Marshal(ev)
	require.NoError(b, err)
	return &bus.Msg{Subject: subject, Data: data, Header: nats.Header{}}
}

// BenchmarkStage_handleNew measures the aggregator's own work on a new
// incident that stays individual: decode, both detectors (in-memory
// stores), route, encode the open event. 1,000 incidents of 1,000 scopes,
// handled again and again (a redelivered incident takes the same path
// but for the detectors' window bookkeeping).
func BenchmarkStage_handleNew(b *testing.B) {
	agg, subj, records := benchStage(b)
	ctx := context.Background()
	evs := benchEvents(b, records, 1000, func(i int) string { return fmt.Sprintf("ns-%d", i) })
	msgs := make([]*bus.Msg, len(evs))
	for i := range evs {
		msgs[i] = benchMsg(b, subj.DedupNew(), &evs[i])
	}
	b.ReportAllocs()
	i := 0
	cpu := testenv.ReadCPU(b, nil)
	for b.Loop() {
		outs, err := agg.Handle(ctx, msgs[i%len(msgs)])
		if err != nil || len(outs) != 1 {
			b.Fatalf("handled %d: %d outputs, %v", i, len(outs), err)
		}
		i++
	}
	testenv.ReportCPU(b, nil, cpu)
}

// BenchmarkStage_handleMember measures the aggregator's own work on a
// storm member's repeat: decode, count it on the storm (in-memory store),
// encode the storm's event. Every repeat raises its member's count, so
// every one changes the storm.
func BenchmarkStage_handleMember(b *testing.B) {
	agg, subj, records := benchStage(b)
	ctx := context.Background()
	evs := benchEvents(b, records, 200, func(int) string { return "shop" })
	route := ""
	for i := range evs {
		outs, err := agg.Handle(ctx, benchMsg(b, subj.DedupNew(), &evs[i]))
		require.NoError(b, err)
		if outs[0].Subject == subj.IncidentsStorm() && route == "" {
			var st incident.Storm
			require.NoError(b, incident.Unmarshal(outs[0].Data, &st))
			route = st.StormID
		}
	}
	require.NotEmpty(b, route, "the burst opened a storm")
	// Each member's repeat, with its count spliced in per message.
	members := evs[len(evs)-100:]
	type tmpl struct{ head, tail []byte }
	tmpls := make([]tmpl, len(members))
	for i := range members {
		e := members[i]
		e.Decision, e.Route, e.Count = incident.DecisionOccurrence, route, 999_999_999
		data := benchMsg(b, subj.DedupMember(), &e).Data
		at := bytes.Index(data, []byte(`"count":999999999`)) + len(`"count":`)
		tmpls[i] = tmpl{head: data[:at], tail: data[at+len("999999999"):]}
	}
	b.ReportAllocs()
	i := 0
	cpu := testenv.ReadCPU(b, nil)
	for b.Loop() {
		t := tmpls[i%len(tmpls)]
		data := append(append(append(make([]byte, 0, len(t.head)+len(t.tail)+12), t.head...), strconv.Itoa(2+i/len(tmpls))...), t.tail...)
		outs, err := agg.Handle(ctx, &bus.Msg{Subject: subj.DedupMember(), Data: data, Header: nats.Header{}})
		if err != nil || len(outs) != 1 {
			b.Fatalf("handled %d: %d outputs, %v", i, len(outs), err)
		}
		i++
	}
	testenv.ReportCPU(b, nil, cpu)
}
