package record_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/record/recordtest"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/test/testenv"
)

func TestMemoryStore_conformance(t *testing.T) {
	recordtest.Run(t, func(t testing.TB, clk clock.Clock) record.Store {
		return record.NewMemoryStore(recordtest.Config, clk)
	})
}

func TestRedisStore_conformance(t *testing.T) {
	recordtest.Run(t, func(t testing.TB, clk clock.Clock) record.Store {
		r := testenv.LocalRedis(t)
		cfg := config.DefaultRedis()
		cfg.Addrs = []string{r.Addr}
		c, err := redisclient.New(cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return record.NewRedisStore(c, r.Prefix, recordtest.Config, clk)
	})
}
