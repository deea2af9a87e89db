package record_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/record/recordtest"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// BenchmarkRedisStore_memory measures the Redis memory the deduper's
// state takes, for sizing Redis (README, "Sizing Redis"): used_memory of
// a redis-server of its own before and after b.N decisions, with the
// default key prefix and the receiver's 64-hex fingerprints and message
// ids. "repeat" decides b.N messages of one incident (a seen mark each),
// "new" b.N messages of as many incidents (a seen mark and an incident
// record each). Run with -benchtime=100000x: Redis grows its key table
// in powers of two, so small counts over- or understate.
func BenchmarkRedisStore_memory(b *testing.B) {
	for _, tc := range []struct {
		name, unit string
		fp         func(i int) string
	}{
		{"repeat", "B/seen-mark", func(int) string { return fingerprint(-1) }},
		{"new", "B/incident+mark", fingerprint},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := testenv.OwnRedis(b)
			store := record.NewRedisStore(r.Client, config.DefaultRedis().KeyPrefix, recordtest.Config, clock.Real{})
			ctx := context.Background()
			before := usedMemory(b, r.Client)
			b.ResetTimer()
			for i := range b.N {
				sig := &signal.Head{ID: "x", Fingerprint: tc.fp(i), Status: signal.StatusFiring,
					Target: signal.Target{Kind: "Pod", Name: "payments-api-7d9c8b6f5-x2k4q", Namespace: "payments"}}
				if _, err := store.Decide(ctx, sig, fingerprint(1_000_000_000+i)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(usedMemory(b, r.Client)-before)/float64(b.N), tc.unit)
		})
	}
}

// usedMemory is INFO memory's used_memory, in bytes.
func usedMemory(b *testing.B, c *redis.Client) int64 {
	b.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}
