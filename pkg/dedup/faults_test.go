package dedup_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dedup"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/record/recordtest"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/test/testenv"
)

// ownStore returns a RedisStore on the test's own Redis topology.
func ownStore(t testing.TB, cfg config.Redis) *record.RedisStore {
	t.Helper()
	cfg.DialTimeout, cfg.ReadTimeout, cfg.WriteTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	require.NoError(t, cfg.Validate())
	c, err := redisclient.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return record.NewRedisStore(c, "swt"+testenv.RandomID(), recordtest.Config, clock.Real{})
}

// waitFor polls cond until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertExact checks that n signals over fps fingerprints of tag each
// counted once, and that each fingerprint's newest state was published.
func assertExact(t *testing.T, p *pipeline, store record.Store, tag string, n, fps int) {
	t.Helper()
	total, found := sumCounts(t, store, tag, fps)
	assert.Equal(t, fps, found, "a record per fingerprint")
	assert.EqualValues(t, n, total, "every signal counted exactly once")
	subj := p.subjectCounts(t, bus.StreamIncidents)
	assert.EqualValues(t, fps, subj[p.subj.DedupNew()], "one new incident per fingerprint")
	assert.LessOrEqual(t, subj[p.subj.DedupUnrouted()], uint64(n-fps), "at most one update per repeat (none routed here)")
	assertNewestPublished(t, p, store, tag, fps)
	assert.Empty(t, p.subjectCounts(t, bus.StreamDLQ), "nothing dead-lettered")
}

func TestStage_redisStoppedMidStream(t *testing.T) {
	const n, fps = 3000, 30
	// Every write is on disk before it is answered, so a restart keeps
	// what was acknowledged, as a production Redis with AOF would.
	srv := testenv.StartRedisServer(t, "--appendonly", "yes", "--appendfsync", "always")
	cfg := config.DefaultRedis()
	cfg.Addrs = []string{srv.Addr}
	store := ownStore(t, cfg)
	p := newPipeline(t)
	r := p.start(t, store)
	sigs := firingSignals("outage", n, fps)

	p.publish(t, sigs[:500]...)
	p.waitSettled(t, 500, 30*time.Second)
	require.Equal(t, 200, r.readyz(t))
	published := p.publishAsync(t, sigs[500:])

	srv.Stop()
	waitFor(t, 10*time.Second, "readiness 503 while redis is down", func() bool { return r.readyz(t) == 503 })
	waitFor(t, 10*time.Second, "decisions failing", func() bool { return counterValue(r.stage.Metrics().Errors) > 0 })
	info := p.consumer(t)
	assert.Positive(t, info.NumPending+uint64(info.NumAckPending), "signals wait in the stream")
	assert.Less(t, info.AckFloor.Stream, uint64(n), "not everything was acked during the outage")

	srv.Start()
	<-published
	p.waitSettled(t, n, time.Minute)
	waitFor(t, 10*time.Second, "ready again", func() bool { return r.readyz(t) == 200 })
	assertExact(t, p, store, "outage", n, fps)
}

func TestStage_redisOutOfMemoryWaits(t *testing.T) {
	const n, fps = 1000, 20
	srv := testenv.StartRedisServer(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = admin.Close() })
	ctx := context.Background()
	orig, err := admin.ConfigGet(ctx, "maxmemory").Result()
	require.NoError(t, err)
	restore := func() { require.NoError(t, admin.ConfigSet(ctx, "maxmemory", orig["maxmemory"]).Err()) }
	t.Cleanup(func() {
		restore()
		now, err := admin.ConfigGet(ctx, "maxmemory").Result()
		require.NoError(t, err)
		assert.Equal(t, orig, now, "maxmemory restored")
	})

	cfg := config.DefaultRedis()
	cfg.Addrs = []string{srv.Addr}
	store := ownStore(t, cfg)
	p := newPipeline(t)
	r := p.start(t, store)
	sigs := firingSignals("oom", n, fps)
	p.publish(t, sigs[:n/2]...)
	p.waitSettled(t, n/2, 30*time.Second)
	before := p.subjectCounts(t, bus.StreamIncidents)

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err(), "a maxmemory far below what is used")
	p.publish(t, sigs[n/2:]...)
	waitFor(t, 10*time.Second, "decisions failing with OOM", func() bool { return counterValue(r.stage.Metrics().Errors) >= 5 })
	waitFor(t, 10*time.Second, "readiness 503 while redis refuses writes", func() bool { return r.readyz(t) == 503 })
	oom := map[string]string{"stage": dedup.StageName, "reason": redisclient.ReasonOOM}
	assert.GreaterOrEqual(t, testenv.MetricValue(t, "http://"+r.health+"/metrics", "stormweir_store_errors_total", oom), 5.0,
		"the failures are counted as Redis out of memory")
	info := p.consumer(t)
	assert.EqualValues(t, n/2, info.AckFloor.Stream, "no signal acked while redis is out of memory")
	assert.Equal(t, before, p.subjectCounts(t, bus.StreamIncidents), "no event published while redis is out of memory")
	assert.Zero(t, r.decisions(incident.DecisionNew)+r.decisions(incident.DecisionOccurrence)-n/2, "no decision taken while out of memory")

	restore()
	p.waitSettled(t, n, time.Minute)
	waitFor(t, 10*time.Second, "ready again", func() bool { return r.readyz(t) == 200 })
	assertExact(t, p, store, "oom", n, fps)
}

func TestStage_redisClusterFailover(t *testing.T) {
	const n, fps = 4000, 60
	rc := testenv.StartRedisCluster(t, 3)

	cfg := config.DefaultRedis()
	cfg.Mode, cfg.Addrs = "cluster", rc.Addrs()
	store := ownStore(t, cfg)
	p := newPipeline(t)
	p.start(t, store)
	p.start(t, store)
	sigs := firingSignals("cluster", n, fps)

	p.publish(t, sigs[:1000]...)
	p.waitSettled(t, 1000, 30*time.Second)
	published := p.publishAsync(t, sigs[1000:])
	// Kill while the signals after the first 1,000 are being decided.
	waitFor(t, 30*time.Second, "signals flowing", func() bool { return p.consumer(t).AckFloor.Stream > 1200 })
	victim := rc.MasterFor("any key")
	victim.Stop()
	<-published
	// A failover takes a few node timeouts (1s here); a minute is slack.
	p.waitSettled(t, n, time.Minute)
	rc.WaitFailover(victim, "any key", 30*time.Second)
	assertExact(t, p, store, "cluster", n, fps)
}
