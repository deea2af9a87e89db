package storm_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/incident"
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

// BenchmarkRedisStore_observe measures aggregator decisions/s (one
// Observe of a new incident, as the stage makes per dedup.new) during
// storms in 16 scopes, against the in-run EVALSHA ceiling.
func BenchmarkRedisStore_observe(b *testing.B) {
	r := testenv.LocalRedis(b)
	s := storm.NewRedisStore(r.Client, r.Prefix, 0)
	ctx := context.Background()
	ceiling := evalshaCeiling(b, r.Client, r.Prefix, max(b.N, 20000))
	scopes := make([]storm.Scope, 16)
	for i := range scopes {
		scopes[i] = stormtest.Scope("KubePodCrashLooping", fmt.Sprintf("ns-%d", i))
	}
	now := time.Now()
	var seq atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			inc := fmt.Sprintf("inc-%d", i)
			sc := scopes[i%int64(len(scopes))]
			_, err := s.Observe(ctx, storm.Observation{
				Type: incident.StormRate, Scope: sc, IncidentID: inc, Unit: inc,
				Target: signal.Target{Kind: "Pod", Name: inc, Namespace: sc.Values["namespace"]}, Count: 1,
				Threshold: 10, Window: time.Minute, Inactivity: time.Minute, MaxDuration: time.Hour,
				Signal: []byte(`{"name":"KubePodCrashLooping"}`), Now: now,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "decisions/s")
	b.ReportMetric(ceiling, "evalsha/s")
	b.ReportMetric(rate/ceiling, "ratio")
}

// BenchmarkRedisStore_track measures aggregator decisions/s for storm
// members' repeats (one Track per dedup.member, the bulk of a storm with
// duplicates): 16 open storms of 200 members each, every repeat raising
// a member's count, against the in-run EVALSHA ceiling.
func BenchmarkRedisStore_track(b *testing.B) {
	r := testenv.LocalRedis(b)
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
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "decisions/s")
	b.ReportMetric(ceiling, "evalsha/s")
	b.ReportMetric(rate/ceiling, "ratio")
}
