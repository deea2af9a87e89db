package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// RedisCluster is a Redis Cluster of the test's own: masters, each with one
// replica, as redis-server processes on loopback ports.
type RedisCluster struct {
	t     testing.TB
	Nodes []*RedisServer
}

// StartRedisCluster starts masters×2 redis-server processes, joins them
// into a cluster with one replica per master, and waits until the cluster
// is ok and every replica is in sync: before that, a killed master takes
// its writes with it. Nodes time out after one second, and a replica may
// take over however long its link was down (a test kills masters under
// load), so a failover takes a few seconds.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	c := &RedisCluster{t: t, Nodes: make([]*RedisServer, 2*masters)}
	for i := range c.Nodes {
		c.Nodes[i] = StartRedisServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0")
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	out, err := exec.Command("redis-cli", append(args, "--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	require.NoError(t, err, "redis-cli --cluster create: %s", out)
	c.WaitOK(30 * time.Second)
	require.Eventually(t, func() bool { return c.replicasInSync() == masters }, 30*time.Second, 50*time.Millisecond,
		"every master has a replica in sync")
	return c
}

// Addrs are every node's address, the seeds a client is given.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Running are the nodes not stopped.
func (c *RedisCluster) Running() []*RedisServer {
	var out []*RedisServer
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// WaitOK waits until every running node reports cluster_state:ok and
// sees every slot served by a master that runs.
func (c *RedisCluster) WaitOK(within time.Duration) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, n := range c.Running() {
			info, err := n.info(func(cl *redis.Client) (string, error) { return cl.ClusterInfo(context.Background()).Result() })
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	}, within, 50*time.Millisecond, "redis cluster state ok on every running node")
}

// MasterFor returns the running master that serves key now.
func (c *RedisCluster) MasterFor(key string) *RedisServer {
	c.t.Helper()
	m, err := c.masterFor(key)
	require.NoError(c.t, err)
	return m
}

// WaitFailover waits until a node other than old serves key as master
// (old's replica took over its slots), then until the cluster is ok. A
// killed master must not start again before that: it would come back
// empty and still master of its slots.
func (c *RedisCluster) WaitFailover(old *RedisServer, key string, within time.Duration) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		m, err := c.masterFor(key)
		return err == nil && m != old
	}, within, 50*time.Millisecond, "a replica of %s takes over its slots", old.Addr)
	c.WaitOK(within)
}

func (c *RedisCluster) masterFor(key string) (*RedisServer, error) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: time.Second, MaxRetries: -1})
	defer cc.Close()
	m, err := cc.MasterForKey(context.Background(), key)
	if err != nil {
		return nil, fmt.Errorf("the master for %s: %w", key, err)
	}
	addr := m.Options().Addr
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("the master for %s is %s, not a node of the cluster", key, addr)
}

// replicasInSync counts replicas whose link to their master is up.
func (c *RedisCluster) replicasInSync() int {
	n := 0
	for _, s := range c.Running() {
		if s.InSync() {
			n++
		}
	}
	return n
}

// info runs one query on a short-lived client of the node.
func (s *RedisServer) info(q func(*redis.Client) (string, error)) (string, error) {
	cl := redis.NewClient(s.Security.Options(s.t, s.Addr))
	defer cl.Close()
	return q(cl)
}

// Role is "master" or "slave", what INFO replication says.
func (s *RedisServer) Role() string {
	info, err := s.info(func(cl *redis.Client) (string, error) { return cl.Info(context.Background(), "replication").Result() })
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if r, ok := strings.CutPrefix(line, "role:"); ok {
			return r
		}
	}
	return ""
}

// InSync reports whether the node is a replica whose link to its master
// is up.
func (s *RedisServer) InSync() bool {
	info, err := s.info(func(cl *redis.Client) (string, error) { return cl.Info(context.Background(), "replication").Result() })
	return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
}
