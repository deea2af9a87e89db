package storm_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/signal"
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

// TestRedisStore_conformanceOnCluster runs the suite on a Redis Cluster:
// every script touches the one slot of its scope's hash tag (a script
// across slots fails with CROSSSLOT), and the batched pipelines are split
// by node.
func TestRedisStore_conformanceOnCluster(t *testing.T) {
	rc := testenv.StartRedisCluster(t, 3)
	cfg := config.DefaultRedis()
	cfg.Mode, cfg.Addrs = "cluster", rc.Addrs()
	c, err := redisclient.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	stormtest.Run(t, func(testing.TB) storm.Store {
		return storm.NewRedisStore(c, "swt"+testenv.RandomID(), 0)
	})
}

// TestRedisStore_replicasAgreeWithMemory drives two Redis stores on one
// key prefix (two replicas, each abbreviating replies with what it has
// seen) and the memory store through the same decisions: every answer must
// be the same, whichever replica gives it, past the affected cap and
// through redeliveries, repeats and the close.
func TestRedisStore_replicasAgreeWithMemory(t *testing.T) {
	ctx := context.Background()
	r := testenv.LocalRedis(t)
	replicas := []storm.Store{storm.NewRedisStore(r.Client, r.Prefix, 0), storm.NewRedisStore(r.Client, r.Prefix, 0)}
	mem := storm.NewMemoryStore(0)
	norm := func(s storm.Snapshot) storm.Snapshot {
		if len(s.Affected) == 0 {
			s.Affected = nil
		}
		return s
	}
	sc := stormtest.Scope("KubePodCrashLooping", "shop")
	var id string
	step := 0
	pick := func() storm.Store {
		step++
		// Runs of one replica, then the other, so each sees the storm
		// grow in steps it did not watch.
		return replicas[(step/3)%2]
	}
	for i := range 180 {
		o := stormtest.Obs(sc, i, stormtest.Start.Add(time.Duration(i)*100*time.Millisecond))
		if i%7 == 0 {
			o.Target = signal.Target{}
		}
		want, err := mem.Observe(ctx, o)
		require.NoError(t, err)
		got, err := pick().Observe(ctx, o)
		require.NoError(t, err)
		require.Equal(t, want.Verdict, got.Verdict, "incident %d", i)
		require.Equal(t, want.Replayed, got.Replayed, "incident %d", i)
		require.Equal(t, norm(want.Storm), norm(got.Storm), "incident %d", i)
		if want.Verdict == storm.Opened {
			id = want.Storm.ID
		}
		if i%10 == 9 {
			// A redelivery and a repeat of an earlier member.
			want, err = mem.Observe(ctx, o)
			require.NoError(t, err)
			got, err = pick().Observe(ctx, o)
			require.NoError(t, err)
			require.Equal(t, norm(want.Storm), norm(got.Storm), "replayed incident %d", i)
			u := storm.MemberUpdate{StormID: id, IncidentID: fmt.Sprintf("inc-%d", i-5), Count: int64(i), Now: o.Now}
			ws, err := mem.Track(ctx, u)
			require.NoError(t, err)
			gs, err := pick().Track(ctx, u)
			require.NoError(t, err)
			require.Equal(t, norm(ws), norm(gs), "repeat after incident %d", i)
		}
	}
	now := stormtest.Start.Add(time.Hour)
	wc, err := mem.Claim(ctx, id, "tok", stormtest.Lease, now)
	require.NoError(t, err)
	gc, err := pick().Claim(ctx, id, "tok", stormtest.Lease, now)
	require.NoError(t, err)
	require.Equal(t, storm.Claimed, gc.Status)
	require.Equal(t, norm(wc.Storm), norm(gc.Storm))
	for _, s := range replicas {
		got, err := s.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, norm(wc.Storm), norm(got))
	}
}
