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
	return ping(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
}

func ping(o *redis.Options) error {
	c := redis.NewClient(o)
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
	// Security is what clients need to reach it (none by default).
	Security RedisSecurity
	// bin is the server's binary, redis-server when empty.
	bin  string
	args []string
	cmd  *exec.Cmd
	// probe is how Start knows the server answers.
	probe *redis.Options
}

// RedisSecurity makes a redis-server of the test's own ask for a password,
// TLS, or both.
type RedisSecurity struct {
	// Password is required of clients (requirepass) and given to the
	// master by replicas (masterauth).
	Password string
	// CA, when set, makes the server speak TLS only (the plain port is
	// off; replication and the cluster bus use TLS too) with Cert, and
	// require client certificates signed by CA.
	CA   *CA
	Cert Cert
	// ServerName is the name Cert carries, when not 127.0.0.1.
	ServerName string
	// ClientCert is a certificate of CA for the test's own clients.
	ClientCert Cert
}

// args returns the redis-server settings for s.
func (s RedisSecurity) args(port int) []string {
	var a []string
	if s.Password != "" {
		a = append(a, "--requirepass", s.Password, "--masterauth", s.Password)
	}
	if s.CA == nil {
		return append([]string{"--port", strconv.Itoa(port)}, a...)
	}
	return append([]string{"--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", s.Cert.CertFile, "--tls-key-file", s.Cert.KeyFile, "--tls-ca-cert-file", s.CA.File,
		"--tls-auth-clients", "yes", "--tls-replication", "yes", "--tls-cluster", "yes"}, a...)
}

// Options returns go-redis options that reach the server at addr with
// s: its password and, with TLS, the CA and the client certificate.
func (s RedisSecurity) Options(t testing.TB, addr string) *redis.Options {
	o := &redis.Options{Addr: addr, Password: s.Password, DialTimeout: time.Second, MaxRetries: -1}
	if s.CA != nil {
		o.TLSConfig = s.CA.ClientConfig(t, &s.ClientCert, s.ServerName)
	}
	return o
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
	return StartSecureRedisServer(t, RedisSecurity{}, extra...)
}

// StartSecureRedisServer is StartRedisServer with a password, TLS, or both.
func StartSecureRedisServer(t testing.TB, sec RedisSecurity, extra ...string) *RedisServer {
	t.Helper()
	port := FreePort(t)
	dir := t.TempDir()
	s := &RedisServer{t: t, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, Security: sec}
	s.args = append(append(sec.args(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no"), extra...)
	s.probe = sec.Options(t, s.Addr)
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// StartRedisSentinel starts a Sentinel monitoring master as name, with a
// password and TLS of its own (sec; sec.CA nil for plain TCP), and stops
// it at cleanup. Alone, it is its own quorum.
func StartRedisSentinel(t testing.TB, master *RedisServer, name string, sec RedisSecurity) *RedisServer {
	t.Helper()
	return startSentinel(t, master, name, 1, sec)
}

// StartRedisSentinels starts n Sentinels monitoring master as name with a
// majority quorum (two of three), as a production deployment runs them,
// and waits until each knows the others and master's replicas: before
// that, a master's death is not a failover but an outage.
func StartRedisSentinels(t testing.TB, master *RedisServer, name string, n, replicas int) []*RedisServer {
	t.Helper()
	out := make([]*RedisServer, n)
	for i := range out {
		out[i] = startSentinel(t, master, name, n/2+1, RedisSecurity{})
	}
	ctx := context.Background()
	for _, s := range out {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, DialTimeout: time.Second})
		require.Eventually(t, func() bool {
			others, err := c.Sentinels(ctx, name).Result()
			if err != nil || len(others) != n-1 {
				return false
			}
			reps, err := c.Replicas(ctx, name).Result()
			return err == nil && len(reps) == replicas
		}, 30*time.Second, 50*time.Millisecond, "sentinel %s knows the other sentinels and the replicas", s.Addr)
		_ = c.Close()
	}
	return out
}

func startSentinel(t testing.TB, master *RedisServer, name string, quorum int, sec RedisSecurity) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		t.Fatalf("redis-sentinel is not on PATH (hack/test-deps.sh installs it): %v", err)
	}
	port := FreePort(t)
	dir := t.TempDir()
	conf := []string{
		"bind 127.0.0.1", "dir " + dir, "logfile " + filepath.Join(dir, "redis.log"), "daemonize no",
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", name, master.Port, quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s 1000", name),
		// A failover that stalls is tried again after this, not after
		// the default three minutes.
		fmt.Sprintf("sentinel failover-timeout %s 10000", name),
	}
	// The server's own settings, as configuration lines; a Sentinel has
	// no master of its own to authenticate to.
	a := sec.args(port)
	for i := 0; i+1 < len(a); i += 2 {
		if a[i] == "--masterauth" {
			continue
		}
		conf = append(conf, strings.TrimPrefix(a[i], "--")+" "+a[i+1])
	}
	if master.Security.Password != "" {
		conf = append(conf, fmt.Sprintf("sentinel auth-pass %s %s", name, master.Security.Password))
	}
	path := filepath.Join(dir, "sentinel.conf")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600))
	s := &RedisServer{t: t, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, Security: sec,
		bin: bin, args: []string{path}, probe: sec.Options(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Client returns a client of the test's own for the server (its password
// and TLS included), closed at cleanup.
func (s *RedisServer) Client() *redis.Client {
	c := redis.NewClient(s.Security.Options(s.t, s.Addr))
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start (re)starts the server on its port and waits until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	bin := s.bin
	if bin == "" {
		bin = RedisServerBinary(s.t)
	}
	cmd := exec.Command(bin, s.args...)
	require.NoError(s.t, cmd.Start(), "starting redis-server")
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(s.probe); err == nil || strings.Contains(fmt.Sprint(err), "CLUSTERDOWN") {
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
