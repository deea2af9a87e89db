package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// DefaultRedisAddr is the machine's Redis; STORMWEIR_TEST_REDIS overrides it.
const DefaultRedisAddr = "127.0.0.1:6379"

// Redis is a connection to a shared Redis server with a key prefix of the
// test's own; every key under the prefix is deleted at cleanup.
type Redis struct {
	Client *redis.Client
	Addr   string
	// Prefix is unique to the test; pass it as the store's key prefix.
	Prefix string
}

// LocalRedis connects to the machine's Redis. Without one it falls back to
// a testcontainers Redis when Docker is there, and fails the test otherwise
// (always in CI, where the service must be running).
func LocalRedis(t testing.TB) *Redis {
	t.Helper()
	addr := os.Getenv("STORMWEIR_TEST_REDIS")
	if addr == "" {
		addr = DefaultRedisAddr
	}
	if err := pingRedis(addr); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis at %s is not answering (.ci/run starts it): %v", addr, err)
		}
		caddr, cerr := containerRedis(t)
		if cerr != nil {
			t.Fatalf("redis at %s is not answering (%v), and no Docker fallback: %v; start redis-server or set STORMWEIR_TEST_REDIS", addr, err, cerr)
		}
		addr = caddr
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	prefix := "swt" + RandomID()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		DeleteKeys(ctx, c, prefix+"*")
		_ = c.Close()
	})
	return &Redis{Client: c, Addr: addr, Prefix: prefix}
}

// DeleteKeys removes every key matching pattern.
func DeleteKeys(ctx context.Context, c *redis.Client, pattern string) {
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			c.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Unlink(ctx, batch...)
	}
}

func pingRedis(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// RandomID returns 12 random hex characters.
func RandomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RedisServer is a redis-server process of the test's own, for tests that
// stop, restart, reconfigure or cluster Redis without touching the shared
// server.
type RedisServer struct {
	t    testing.TB
	Port int
	Addr string
	Dir  string
	args []string
	cmd  *exec.Cmd
}

// RedisServerBinary finds redis-server.
func RedisServerBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not on PATH (.ci/run installs it): %v", err)
	}
	return p
}

// StartRedisServer starts redis-server on a free loopback port with extra
// arguments (e.g. "--cluster-enabled", "yes") and stops it at cleanup.
func StartRedisServer(t testing.TB, extra ...string) *RedisServer {
	t.Helper()
	port := FreePort(t)
	dir := t.TempDir()
	s := &RedisServer{t: t, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir}
	s.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no"}, extra...)
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start (re)starts the server on its port and waits until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(RedisServerBinary(s.t), s.args...)
	require.NoError(s.t, cmd.Start(), "starting redis-server")
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := pingRedis(s.Addr); err == nil || strings.Contains(fmt.Sprint(err), "CLUSTERDOWN") {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer within 10s; log:\n%s", s.Addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: a crash, not a shutdown).
func (s *RedisServer) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Running reports whether the process is up.
func (s *RedisServer) Running() bool { return s.cmd != nil }

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
