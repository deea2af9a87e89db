package dedup_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/dedup/deduptest"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/test/testenv"
)

func TestMemoryStore_conformance(t *testing.T) {
	deduptest.Run(t, func(t testing.TB, clk clock.Clock) dedup.Store {
		return dedup.NewMemoryStore(deduptest.Config, clk)
	})
}

func TestRedisStore_conformance(t *testing.T) {
	deduptest.Run(t, func(t testing.TB, clk clock.Clock) dedup.Store {
		r := testenv.LocalRedis(t)
		c, err := redisclient.New(redisConfig(r.Addr))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return dedup.NewRedisStore(c, r.Prefix, deduptest.Config, clk)
	})
}

// redisConfig is the default single-node configuration pointed at addr.
func redisConfig(addrs ...string) config.Redis {
	cfg := config.DefaultRedis()
	cfg.Addrs = addrs
	return cfg
}
