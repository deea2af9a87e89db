package testenv

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// OwnRedis is LocalRedis on a redis-server of the caller's own, so that
// what the server does (and the CPU it uses, see CPU) is the caller's
// alone: benchmarks use it on a machine whose shared Redis serves others.
func OwnRedis(tb testing.TB) *Redis {
	tb.Helper()
	s := StartRedisServer(tb)
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { _ = c.Close() })
	return &Redis{Client: c, Addr: s.Addr, Prefix: "swt" + RandomID()}
}

// CPU is the CPU time (user + system) used by this process and by a
// Redis server. Benchmarks report it per operation next to wall time: on
// a machine shared with other work, wall time per operation moves with
// everyone's load, CPU time far less.
type CPU struct {
	Process time.Duration
	Redis   time.Duration
}

// ReadCPU reads this process's CPU time and that of c's server.
func ReadCPU(tb testing.TB, c redis.UniversalClient) CPU {
	tb.Helper()
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	info, err := c.Info(context.Background(), "cpu").Result()
	require.NoError(tb, err)
	var redisCPU time.Duration
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			s, err := strconv.ParseFloat(v, 64)
			require.NoError(tb, err)
			redisCPU += time.Duration(s * float64(time.Second))
		}
	}
	return CPU{Process: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), Redis: redisCPU}
}

// ReportCPU reports the CPU time used since start per operation of b:
// this process's as cpu-µs/op, the Redis server's as redis-cpu-µs/op.
func ReportCPU(b *testing.B, c redis.UniversalClient, start CPU) {
	b.Helper()
	end := ReadCPU(b, c)
	n := float64(b.N)
	b.ReportMetric(float64(end.Process-start.Process)/float64(time.Microsecond)/n, "cpu-µs/op")
	b.ReportMetric(float64(end.Redis-start.Redis)/float64(time.Microsecond)/n, "redis-cpu-µs/op")
}
