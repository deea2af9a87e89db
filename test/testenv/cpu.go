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

// ReadCPU reads this process's CPU time and, when c is not nil, that of
// c's server.
func ReadCPU(tb testing.TB, c redis.UniversalClient) CPU {
	tb.Helper()
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	cpu := CPU{Process: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if c == nil {
		return cpu
	}
	info, err := c.Info(context.Background(), "cpu").Result()
	require.NoError(tb, err)
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			s, err := strconv.ParseFloat(v, 64)
			require.NoError(tb, err)
			cpu.Redis += time.Duration(s * float64(time.Second))
		}
	}
	return cpu
}

// ReportCPU reports the CPU time used since start per operation of b:
// this process's as cpu-µs/op and, when c is not nil, its Redis server's
// as redis-cpu-µs/op.
func ReportCPU(b *testing.B, c redis.UniversalClient, start CPU) {
	b.Helper()
	end := ReadCPU(b, c)
	n := float64(b.N)
	b.ReportMetric(float64(end.Process-start.Process)/float64(time.Microsecond)/n, "cpu-µs/op")
	if c != nil {
		b.ReportMetric(float64(end.Redis-start.Redis)/float64(time.Microsecond)/n, "redis-cpu-µs/op")
	}
}
