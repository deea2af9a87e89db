package crash

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/test/pipeline"
)

// long runs the fault tests' long forms (make test-faults): a load half
// again the crash load and each fault several times. Without it they run
// a short load with each fault once, which `go test ./...` can afford.
var long = flag.Bool("long", false, "run the fault tests' long forms: 30,000 alerts, each fault repeated (make test-faults)")

// faultLoad is the crash load, shortened to 8,000 alerts (8 s) or, with
// -long, lengthened to 30,000 (half a minute).
func faultLoad() loadgen.Config {
	cfg := crashLoad()
	cfg.Alerts = 8_000
	if *long {
		cfg.Alerts = 30_000
	}
	return cfg
}

// settleTimeout bounds how long a test waits for the pipeline to finish
// the load after the sender is done. The writer is the slowest stage; on
// 2 busy cores the long forms' backlog takes minutes.
func settleTimeout() time.Duration {
	if *long {
		return 10 * time.Minute
	}
	return 3 * time.Minute
}

// rounds is how often a fault test repeats its fault.
func rounds() int {
	if *long {
		return 3
	}
	return 1
}

// point returns the number of stored signals at which the i-th of n
// faults strikes: the load is split into n+1 equal parts.
func point(cfg loadgen.Config, i, n int) uint64 {
	return uint64(cfg.Alerts * (i + 1) / (n + 1))
}

// logf logs with the time since start.
func logf(t *testing.T, start time.Time, format string, args ...any) {
	t.Helper()
	t.Logf("t=%s: "+format, append([]any{time.Since(start).Round(time.Millisecond)}, args...)...)
}

// TestPipeline_survivesNATSLeaderKill runs the pipeline on a three-node
// NATS cluster with every stream on all three nodes (R3), and SIGKILLs
// the node that leads a stream while the load runs: the signals stream
// first, then (long form) the incidents stream and the signals stream
// again. Each time the other two elect a new leader, the receiver answers
// 503 until the publish succeeds again (the sender retries), the workers
// pull from the new leader, and the killed node starts again on its
// store and catches up before the next kill.
func TestPipeline_survivesNATSLeaderKill(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{NATSCluster: true})
	cfg := faultLoad()
	kinds := []string{bus.StreamSignals, bus.StreamIncidents, bus.StreamSignals}[:rounds()]
	crashRun(t, p, cfg, func() {
		start := time.Now()
		for i, kind := range kinds {
			p.WaitSignals(point(cfg, i, len(kinds)), 2*time.Minute)
			leader, err := p.StreamLeader(context.Background(), kind)
			require.NoError(t, err)
			logf(t, start, "kill -9 %s, the leader of %s", leader.Name, kind)
			p.KillNATSNode(leader)
			p.WaitStreamsCurrent(time.Minute)
			now, err := p.StreamLeader(context.Background(), kind)
			require.NoError(t, err)
			logf(t, start, "%s is led by %s", kind, now.Name)
			p.StartNATSNode(leader, 2*time.Minute)
			logf(t, start, "%s up again and current", leader.Name)
		}
	})
}

// TestPipeline_survivesRedisSentinelFailover runs Redis as a master, a
// replica and three Sentinels (quorum two), and SIGKILLs the master while
// the load runs. The Sentinels promote the replica; the stages' clients
// ask them for the new master and the deduper and the aggregator nak and
// retry meanwhile. The long form starts the old master again (the
// Sentinels make it a replica of the new one), waits until it is in sync,
// and kills the new master, and so on.
func TestPipeline_survivesRedisSentinelFailover(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{Redis: pipeline.RedisSentinel})
	cfg := faultLoad()
	sc := redis.NewSentinelClient(&redis.Options{Addr: p.Sentinels[0].Addr})
	t.Cleanup(func() { _ = sc.Close() })
	master, replica := p.Redis, p.RedisReplica
	n := rounds()
	crashRun(t, p, cfg, func() {
		start := time.Now()
		ctx := context.Background()
		for i := range n {
			p.WaitSignals(point(cfg, i, n), 2*time.Minute)
			require.True(t, replica.InSync(), "the replica is in sync before its master dies")
			logf(t, start, "kill -9 the master %s", master.Addr)
			master.Stop()
			require.Eventually(t, func() bool {
				addr, err := sc.GetMasterAddrByName(ctx, pipeline.SentinelMaster).Result()
				return err == nil && len(addr) == 2 && addr[0]+":"+addr[1] == replica.Addr
			}, time.Minute, 50*time.Millisecond, "the sentinels promote the replica %s", replica.Addr)
			logf(t, start, "the sentinels promoted %s", replica.Addr)
			if i == n-1 {
				break
			}
			master.Start()
			// The Sentinels wait for the old master's role to hold still
			// before they make it a replica, then it syncs in full: on busy
			// cores that took over a minute.
			require.Eventually(t, master.InSync, 3*time.Minute, 50*time.Millisecond, "the old master %s becomes a replica in sync", master.Addr)
			logf(t, start, "the old master %s is a replica in sync", master.Addr)
			master, replica = replica, master
		}
	})
}

// TestPipeline_survivesRedisClusterFailover runs Redis as a cluster of
// three masters with a replica each, and SIGKILLs a master while the load
// runs: the deduper's records, the aggregator's storm windows and the
// writer's reads all live in it. The replica takes over the master's
// slots; the stages' clients reload the slot map after the first failed
// command. The first victim serves the storm store's deadline index; the
// long form starts each victim again (it rejoins as a replica), waits
// until it is in sync, and kills the master of another part of the
// keyspace.
func TestPipeline_survivesRedisClusterFailover(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{Redis: pipeline.RedisCluster})
	cfg := faultLoad()
	rc := p.RedisCluster
	keys := []string{p.Config.Redis.KeyPrefix + ":storm:deadlines", "a", "b"}
	n := rounds()
	crashRun(t, p, cfg, func() {
		start := time.Now()
		for i := range n {
			p.WaitSignals(point(cfg, i, n), 2*time.Minute)
			victim := rc.MasterFor(keys[i])
			logf(t, start, "kill -9 the master %s (serving %q)", victim.Addr, keys[i])
			victim.Stop()
			rc.WaitFailover(victim, keys[i], time.Minute)
			logf(t, start, "a replica took over; the cluster is ok again")
			if i == n-1 {
				break
			}
			victim.Start()
			require.Eventually(t, victim.InSync, time.Minute, 50*time.Millisecond, "%s rejoins as a replica in sync", victim.Addr)
			rc.WaitOK(time.Minute)
			logf(t, start, "%s is a replica in sync", victim.Addr)
		}
	})
}

// TestPipeline_survivesReplicaKills runs 2 receivers (behind a balancer,
// as behind a Service), 3 dedupers, 2 aggregators and 2 writers, and
// SIGKILLs one replica of each stage during the load without starting it
// again: the survivors get the killed workers' unacked messages after
// AckWait, and the senders' retries reach the surviving receiver. The
// long form then starts the victims again and kills the other replicas,
// and once more.
func TestPipeline_survivesReplicaKills(t *testing.T) {
	p := pipeline.Start(t, pipeline.Options{Replicas: map[string]int{
		pipeline.Receiver: 2, pipeline.Deduper: 3, pipeline.Aggregator: 2, pipeline.Writer: 2,
	}})
	cfg := faultLoad()
	stages := []string{pipeline.Deduper, pipeline.Aggregator, pipeline.Writer, pipeline.Receiver}
	n := rounds() * len(stages)
	crashRun(t, p, cfg, func() {
		start := time.Now()
		down := map[string]string{} // stage → its replica that is down
		for i := range n {
			stage := stages[i%len(stages)]
			p.WaitSignals(point(cfg, i, n), 2*time.Minute)
			// The victim is a replica that runs; the one killed before,
			// if any, starts again first, so a stage always has one down
			// at most.
			names := p.Instances(stage)
			victim := names[len(names)-1-(i/len(stages))%len(names)]
			if prev, ok := down[stage]; ok {
				p.Start(prev)
				logf(t, start, "%s started again", prev)
			}
			logf(t, start, "kill -9 %s", victim)
			p.Kill(victim)
			down[stage] = victim
		}
	})
}
