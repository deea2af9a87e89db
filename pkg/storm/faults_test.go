package storm_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/test/testenv"
)

// TestStage_redisOutOfMemoryWaits runs the aggregator against a Redis of
// its own that reaches maxmemory (noeviction) and gets room again.
//
// Timeline:
//
//	t=0    one alert goes through both stages: one request-worthy open.
//	OOM    maxmemory far below what is used; a new incident's event
//	       (as the deduper would have published it before the OOM) is
//	       not acked, nothing is published for it, the failures are
//	       counted as oom by stormweir_store_errors_total, and the
//	       aggregator answers /readyz 503.
//	room   maxmemory restored: the event is decided (one open, its
//	       incident routed individually) and the aggregator is ready.
func TestStage_redisOutOfMemoryWaits(t *testing.T) {
	ctx := context.Background()
	p := preparePipeline(t, nil)
	srv := testenv.StartRedisServer(t)
	p.redis = &testenv.Redis{Client: srv.Client(), Addr: srv.Addr, Prefix: p.redis.Prefix}
	p.start()
	addr := p.health
	readyz := func() int {
		resp, err := http.Get("http://" + addr + "/readyz")
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	oomErrors := func() float64 {
		return testenv.MetricValue(t, "http://"+addr+"/metrics", "stormweir_store_errors_total",
			map[string]string{"stage": storm.StageName, "reason": redisclient.ReasonOOM})
	}

	p.settle(time.Second, pod("KubePodCrashLooping", "payments", "api-0"))
	require.Len(t, p.read().open, 1)
	require.Equal(t, http.StatusOK, readyz())

	admin := srv.Client()
	orig, err := admin.ConfigGet(ctx, "maxmemory").Result()
	require.NoError(t, err)
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err(), "a maxmemory far below what is used")

	// The deduper's event for a new incident, published as it does.
	s := p.signal(pod("KubePodCrashLooping", "payments", "api-1"))
	enc, err := signal.Encode(s)
	require.NoError(t, err)
	id := record.IncidentID(s.Fingerprint, s.ID)
	ev := incident.Event{Decision: incident.DecisionNew, IncidentID: id, Fingerprint: s.Fingerprint, Revision: 1,
		State: incident.StateFiring, Count: 1, FirstSeen: s.ReceivedAt, LastSeen: s.ReceivedAt, Signal: enc}
	data, err := incident.Marshal(&ev)
	require.NoError(t, err)
	_, err = p.pub.Publish(ctx, bus.Output{Subject: p.subj.DedupNew(), Data: data, MsgID: "dedup:" + s.ID})
	require.NoError(t, err)

	require.Eventually(t, func() bool { return oomErrors() >= 2 }, 20*time.Second, 20*time.Millisecond,
		"the aggregator's store calls fail as Redis out of memory, and are retried")
	require.Eventually(t, func() bool { return readyz() == http.StatusServiceUnavailable }, 10*time.Second, 20*time.Millisecond,
		"unready while Redis refuses writes")
	info, err := p.conn.JS.Consumer(ctx, p.subj.StreamName(bus.StreamIncidents), app.Aggregator)
	require.NoError(t, err)
	ci, err := info.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, ci.NumAckPending+int(ci.NumPending), "the event is not acked while Redis is out of memory")
	assert.Len(t, p.read().open, 1, "nothing is published for it")

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", orig["maxmemory"]).Err())
	p.waitIdle()
	open := p.read().open
	require.Len(t, open, 2, "decided once Redis has room")
	assert.Equal(t, id, open[1].IncidentID)
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 10*time.Second, 20*time.Millisecond, "ready again")
}
