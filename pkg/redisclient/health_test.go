package redisclient_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/test/testenv"
)

// Redis answers each error with its code first; a script's error_reply
// gets the same answers from a real server as the condition would.
func TestReason_namesWhatRedisAnswered(t *testing.T) {
	c := testenv.LocalRedis(t).Client
	ctx := context.Background()
	for reply, want := range map[string]string{
		"OOM command not allowed when used memory > 'maxmemory'.": redisclient.ReasonOOM,
		"READONLY You can't write against a read only replica.":   redisclient.ReasonReadOnly,
		"LOADING Redis is loading the dataset in memory":          redisclient.ReasonLoading,
		"NOAUTH Authentication required.":                         redisclient.ReasonAuth,
		"CLUSTERDOWN The cluster is down":                         redisclient.ReasonUnavailable,
		"ERR something else":                                      redisclient.ReasonError,
	} {
		err := c.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, reply).Err()
		require.Error(t, err)
		assert.True(t, redisclient.IsRedisError(err), reply)
		assert.Equal(t, want, redisclient.Reason(err), reply)
	}

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = down.Close() })
	err := down.Ping(ctx).Err()
	require.Error(t, err)
	assert.True(t, redisclient.IsRedisError(err))
	assert.Equal(t, redisclient.ReasonUnavailable, redisclient.Reason(err))
}

func TestStoreHealth_unreadyWhileCallsFailAndCountsByReason(t *testing.T) {
	c := testenv.LocalRedis(t).Client
	ctx := context.Background()
	oom := c.Eval(ctx, "return redis.error_reply('OOM command not allowed')", nil).Err()
	require.Error(t, oom)

	reg := prometheus.NewRegistry()
	h := redisclient.NewStoreHealth(reg, slog.New(slog.DiscardHandler), "deduper")
	other := redisclient.NewStoreHealth(reg, slog.New(slog.DiscardHandler), "aggregator")
	require.NoError(t, h.Check(ctx))

	h.Observe(oom)
	h.Observe(oom)
	other.Observe(nil)
	err := h.Check(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "maxmemory")
	assert.NoError(t, other.Check(ctx), "each stage's health is its own")
	assert.Equal(t, 2.0, counter(t, reg, "deduper", "oom"))

	h.Observe(nil)
	assert.NoError(t, h.Check(ctx), "ready once a call works again")
}

func counter(t *testing.T, reg *prometheus.Registry, stage, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "stormweir_store_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["stage"] == stage && l["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no stormweir_store_errors_total{stage=%q,reason=%q}", stage, reason)
	return 0
}
