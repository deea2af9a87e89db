package redisclient_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/redisclient"
	"github.com/stormweir/stormweir/test/testenv"
)

// redisName is the only name the test servers' certificates carry: the
// tests dial 127.0.0.1, so the certificate verifies only with
// redis.tls.server_name set, as with Sentinel and Cluster nodes announced
// by IP address.
const redisName = "redis.stormweir.test"

func secretFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// newClient builds a client for cfg, closed at cleanup.
func newClient(t testing.TB, cfg config.Redis) redis.UniversalClient {
	t.Helper()
	cfg.DialTimeout, cfg.ReadTimeout, cfg.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	require.NoError(t, cfg.Validate(), "the configuration under test is valid")
	c, err := redisclient.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// requireWorks writes and reads keys spread over every cluster slot range.
func requireWorks(t testing.TB, c redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, redisclient.Check(ctx, c))
	for i := range 50 {
		k := fmt.Sprintf("redisclient-test:%d", i)
		require.NoError(t, c.Set(ctx, k, i, time.Minute).Err(), "SET %s", k)
		v, err := c.Get(ctx, k).Int()
		require.NoError(t, err, "GET %s", k)
		require.Equal(t, i, v)
	}
}

// tlsSecurity returns a CA, a server certificate for redisName and a
// client certificate.
func tlsSecurity(t testing.TB, password string) testenv.RedisSecurity {
	ca := testenv.NewCA(t, "redis-test-ca")
	return testenv.RedisSecurity{Password: password, CA: ca, Cert: ca.Issue(t, "redis", redisName), ServerName: redisName, ClientCert: ca.Issue(t, "stormweir")}
}

func clientTLS(sec testenv.RedisSecurity) config.RedisTLS {
	return config.RedisTLS{Enabled: true, CAFile: sec.CA.File, CertFile: sec.ClientCert.CertFile, KeyFile: sec.ClientCert.KeyFile, ServerName: redisName}
}

func TestNew_passwordFile(t *testing.T) {
	srv := testenv.StartSecureRedisServer(t, testenv.RedisSecurity{Password: "redis-pw-0123456789"})
	base := config.DefaultRedis()
	base.Addrs = []string{srv.Addr}

	t.Run("the password file", func(t *testing.T) {
		cfg := base
		cfg.PasswordFile = secretFile(t, "redis-pw-0123456789\n")
		requireWorks(t, newClient(t, cfg))
	})
	t.Run("no password", func(t *testing.T) {
		err := redisclient.Check(context.Background(), newClient(t, base))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redis requires a password (set redis.password_file): NOAUTH")
	})
	t.Run("a wrong password", func(t *testing.T) {
		cfg := base
		cfg.PasswordFile = secretFile(t, "not-the-password")
		err := redisclient.Check(context.Background(), newClient(t, cfg))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redis refused the password (check redis.username and redis.password_file): WRONGPASS")
	})
	t.Run("an unreadable password file", func(t *testing.T) {
		cfg := base
		cfg.PasswordFile = filepath.Join(t.TempDir(), "missing")
		_, err := redisclient.New(cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redis: reading redis.password_file: open "+cfg.PasswordFile)
	})
	t.Run("an ACL user", func(t *testing.T) {
		require.NoError(t, srv.Client().Do(context.Background(), "ACL", "SETUSER", "stormweir", "on", ">user-pw-0123456789", "~*", "+@all").Err())
		cfg := base
		cfg.Username, cfg.PasswordFile = "stormweir", secretFile(t, "user-pw-0123456789")
		requireWorks(t, newClient(t, cfg))
	})
}

func TestNew_rereadsThePasswordFileForNewConnections(t *testing.T) {
	srv := testenv.StartSecureRedisServer(t, testenv.RedisSecurity{Password: "before-rotation"})
	cfg := config.DefaultRedis()
	cfg.Addrs, cfg.PasswordFile = []string{srv.Addr}, secretFile(t, "before-rotation")
	c := newClient(t, cfg)
	requireWorks(t, c)

	// Rotate: the server and the Secret change, then the server drops its
	// connections; the client's new connections use the new password.
	ctx := context.Background()
	admin := srv.Client()
	require.NoError(t, admin.ConfigSet(ctx, "requirepass", "after-rotation").Err())
	require.NoError(t, os.WriteFile(cfg.PasswordFile, []byte("after-rotation"), 0o600))
	require.NoError(t, admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no").Err())

	require.Eventually(t, func() bool { return redisclient.Check(ctx, c) == nil }, 10*time.Second, 20*time.Millisecond,
		"connections made after the rotation authenticate with the new password")
	requireWorks(t, c)
}

func TestNew_tls(t *testing.T) {
	sec := tlsSecurity(t, "")
	srv := testenv.StartSecureRedisServer(t, sec)
	good := config.DefaultRedis()
	good.Addrs, good.TLS = []string{srv.Addr}, clientTLS(sec)
	requireWorks(t, newClient(t, good))

	other := testenv.NewCA(t, "another-ca")
	cases := map[string]struct {
		set  func(*config.RedisTLS)
		want string
	}{
		"no client certificate":             {func(c *config.RedisTLS) { c.CertFile, c.KeyFile = "", "" }, "certificate required"},
		"another CA":                        {func(c *config.RedisTLS) { c.CAFile = other.File }, "certificate signed by unknown authority"},
		"the server's name is not the host": {func(c *config.RedisTLS) { c.ServerName = "" }, "cannot validate certificate for 127.0.0.1"},
		"no TLS":                            {func(c *config.RedisTLS) { *c = config.RedisTLS{} }, "redis: EOF"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := good
			tc.set(&cfg.TLS)
			err := redisclient.Check(context.Background(), newClient(t, cfg))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("an unreadable CA file", func(t *testing.T) {
		cfg := good
		cfg.TLS.CAFile += ".missing"
		_, err := redisclient.New(cfg)
		assert.ErrorContains(t, err, "redis: reading redis.tls.ca_file: open ")
	})
}

func TestNew_sentinelWithTLSAndPasswords(t *testing.T) {
	sec := tlsSecurity(t, "master-pw-0123456789")
	master := testenv.StartSecureRedisServer(t, sec)
	sentinelSec := sec
	sentinelSec.Password = "sentinel-pw-0123456789"
	sentinel := testenv.StartRedisSentinel(t, master, "stormweir", sentinelSec)

	cfg := config.DefaultRedis()
	cfg.Mode, cfg.MasterName, cfg.Addrs = "sentinel", "stormweir", []string{sentinel.Addr}
	cfg.PasswordFile = secretFile(t, "master-pw-0123456789")
	cfg.SentinelPasswordFile = secretFile(t, "sentinel-pw-0123456789")
	cfg.TLS = clientTLS(sec)
	requireWorks(t, newClient(t, cfg))

	t.Run("without the sentinel password", func(t *testing.T) {
		cfg := cfg
		cfg.SentinelPasswordFile = ""
		err := redisclient.Check(context.Background(), newClient(t, cfg))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "the redis sentinels require a password (set redis.sentinel_password_file): redis: all sentinels specified in configuration are unreachable: NOAUTH")
	})
	t.Run("an unreadable sentinel password file", func(t *testing.T) {
		cfg := cfg
		cfg.SentinelPasswordFile += ".missing"
		_, err := redisclient.New(cfg)
		assert.ErrorContains(t, err, "redis: reading redis.sentinel_password_file: open ")
	})
}

func TestNew_clusterWithTLSAndPassword(t *testing.T) {
	sec := tlsSecurity(t, "cluster-pw-0123456789")
	nodes := make([]string, 3)
	for i := range nodes {
		nodes[i] = testenv.StartSecureRedisServer(t, sec, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf").Addr
	}
	args := []string{"--tls", "--cacert", sec.CA.File, "--cert", sec.ClientCert.CertFile, "--key", sec.ClientCert.KeyFile,
		"--sni", redisName, "-a", sec.Password, "--no-auth-warning", "--cluster", "create"}
	out, err := exec.Command("redis-cli", append(append(args, nodes...), "--cluster-yes")...).CombinedOutput()
	require.NoError(t, err, "redis-cli --cluster create: %s", out)

	cfg := config.DefaultRedis()
	cfg.Mode, cfg.Addrs = "cluster", nodes[:1]
	cfg.PasswordFile = secretFile(t, sec.Password)
	cfg.TLS = clientTLS(sec)
	c := newClient(t, cfg)
	require.Eventually(t, func() bool {
		info, err := c.ClusterInfo(context.Background()).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	}, 30*time.Second, 50*time.Millisecond, "cluster state ok")
	requireWorks(t, c)
	shards, err := c.(*redis.ClusterClient).ClusterShards(context.Background()).Result()
	require.NoError(t, err)
	assert.Len(t, shards, 3, "the keys went to three masters, each reached over TLS with the password")
}
