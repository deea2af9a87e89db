package record_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/record/recordtest"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// ceilingScript is the reference of DESIGN §10: the least a dedup script
// can do (a seen mark, a counter, a TTL) in one EVALSHA.
var ceilingScript = redis.NewScript(`
if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
`)

// benchWorkers matches the 50 clients of the reference measurement.
const benchWorkers = 50

// rate runs op n times over benchWorkers goroutines and returns ops/s.
func rate(b *testing.B, n int, op func(i int) error) float64 {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range benchWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if p := failed.Load(); p != nil {
		b.Fatal(*p)
	}
	return float64(n) / elapsed.Seconds()
}

// BenchmarkRedisStore_Decide measures dedup decisions/s against a Redis
// server of its own (1,000 fingerprints, every message new, so 0.1% new
// incidents and the rest occurrences), next to the EVALSHA ceiling
// measured on the same server in the same run, before and after, and the
// CPU time per decision of the client and of the server.
func BenchmarkRedisStore_Decide(b *testing.B) {
	r := testenv.OwnRedis(b)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, PoolSize: 2 * benchWorkers})
	b.Cleanup(func() { _ = c.Close() })
	store := record.NewRedisStore(c, r.Prefix, recordtest.Config, clock.Real{})
	ctx := context.Background()
	const fps = 1000
	sigs := make([]*signal.Head, fps)
	for i := range sigs {
		sigs[i] = recordtest.Sig(fingerprint(i), signal.StatusFiring)
	}
	if err := ceilingScript.Load(ctx, c).Err(); err != nil {
		b.Fatal(err)
	}
	ceilingN := max(b.N, 20_000)
	ceiling := func(round string) float64 {
		return rate(b, ceilingN, func(i int) error {
			tag := r.Prefix + ":ceil" + round + ":{" + strconv.Itoa(i%fps) + "}"
			return ceilingScript.EvalSha(ctx, c, []string{tag + ":seen:" + strconv.Itoa(i), tag + ":n"}, 3_600_000).Err()
		})
	}
	before := ceiling("a")

	b.ResetTimer()
	cpu := testenv.ReadCPU(b, c)
	decisions := rate(b, b.N, func(i int) error {
		_, err := store.Decide(ctx, sigs[i%fps], "m"+strconv.Itoa(i))
		return err
	})
	b.StopTimer()
	testenv.ReportCPU(b, c, cpu)

	after := ceiling("b")
	ceil := (before + after) / 2
	b.ReportMetric(decisions, "decisions/s")
	b.ReportMetric(ceil, "ceiling_evalsha/s")
	b.ReportMetric(decisions/ceil, "ratio")
}

// fingerprint is a SHA-256 hex fingerprint, as the receiver computes them.
func fingerprint(k int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("bench-%d", k)))
	return hex.EncodeToString(h[:])
}
