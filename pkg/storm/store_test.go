package storm_test

import (
	"testing"

	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/pkg/storm/stormtest"
	"github.com/stormweir/stormweir/test/testenv"
)

func TestMemoryStore_conformance(t *testing.T) {
	stormtest.Run(t, func(testing.TB) storm.Store { return storm.NewMemoryStore(0) })
}

func TestRedisStore_conformance(t *testing.T) {
	stormtest.Run(t, func(t testing.TB) storm.Store {
		r := testenv.LocalRedis(t)
		return storm.NewRedisStore(r.Client, r.Prefix, 0)
	})
}
