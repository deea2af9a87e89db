package config_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/config"
)

func TestDefault_isValid(t *testing.T) {
	cfg := config.Default()
	require.NoError(t, cfg.Validate())
	assert.Equal(t, "nats://127.0.0.1:4222", cfg.Bus.URL)
	assert.Equal(t, []string{"127.0.0.1:6379"}, cfg.Redis.Addrs)
}

func TestLoad_layersFileEnvironmentAndFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "stormweir.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
bus:
  url: nats://from-file:4222
  prefix: team-a
dedup:
  window: 7m
  reopen_window: 20m
redis:
  addrs: [a:6379, b:6379]
  mode: cluster
`), 0o600))
	t.Setenv("STORMWEIR_DEDUP_WINDOW", "9m")
	t.Setenv("STORMWEIR_BUS_CONSUMER_RETRY_DELAYS", "1s, 3s")

	l, err := config.Load("test", []string{"--config", file, "--set", "dedup.reopen_window=30m", "--nats-url", "nats://from-flag:4222", "extra"})
	require.NoError(t, err)
	c := l.Config
	assert.Equal(t, "nats://from-flag:4222", c.Bus.URL, "a flag beats the file")
	assert.Equal(t, "team-a", c.Bus.Prefix, "the file beats the default")
	assert.Equal(t, 9*time.Minute, c.Dedup.Window, "the environment beats the file")
	assert.Equal(t, 30*time.Minute, c.Dedup.ReopenWindow, "--set beats the file")
	assert.Equal(t, []time.Duration{time.Second, 3 * time.Second}, c.Bus.Consumer.RetryDelays)
	assert.Equal(t, []string{"a:6379", "b:6379"}, c.Redis.Addrs)
	assert.Equal(t, "cluster", c.Redis.Mode)
	assert.Equal(t, 10, c.Aggregator.RateThreshold, "untouched keys keep their defaults")
	assert.Equal(t, []string{"extra"}, l.Args)
	assert.False(t, l.PrintConfig)
}

func TestLoad_rejectsBadInputClearly(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	require.NoError(t, os.WriteFile(typo, []byte("dedup:\n  windw: 5m\n"), 0o600))
	cases := map[string]struct {
		args []string
		want string
	}{
		"unknown --set key":   {[]string{"--set", "dedup.nope=1"}, `unknown key "dedup.nope"`},
		"--set without value": {[]string{"--set", "dedup.window"}, "want key=value"},
		"bad duration":        {[]string{"--set", "dedup.window=soon"}, "dedup.window"},
		"typo in file":        {[]string{"--config", typo}, "windw"},
		"missing file":        {[]string{"--config", filepath.Join(dir, "none.yaml")}, "reading config file"},
		"invalid value":       {[]string{"--set", "redis.mode=ring"}, `redis.mode: "ring" is not single, sentinel or cluster`},
		"unknown flag":        {[]string{"--bogus"}, "unknown flag"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := config.Load("test", tc.args)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestValidate_reportsEveryProblemAtOnce(t *testing.T) {
	c := config.Default()
	c.Bus.Prefix = "has space"
	c.Redis.Mode = "sentinel"
	c.Writer.Priority[0].Priority = "P9"
	c.Aggregator.Scope = nil
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{"bus.prefix", "redis.master_name", "writer.priority[0].priority", "aggregator.scope"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestPrint_redactsSecrets(t *testing.T) {
	c := config.Default()
	c.Redis.Password = "hunter2"
	c.Receiver.Auth.Tokens = []string{"super-secret-token-123"}
	var buf bytes.Buffer
	require.NoError(t, config.Print(&buf, c))
	assert.NotContains(t, buf.String(), "hunter2")
	assert.NotContains(t, buf.String(), "super-secret-token-123")
	assert.Contains(t, buf.String(), "<redacted>")

	l, err := config.Load("test", []string{"--print-config"})
	require.NoError(t, err)
	assert.True(t, l.PrintConfig)
}

func TestReceiver_checkAuth(t *testing.T) {
	r := config.DefaultReceiver()
	assert.ErrorIs(t, r.CheckAuth(), config.ErrNoAuth)
	r.Auth.Disabled = true
	assert.NoError(t, r.CheckAuth())
	r = config.DefaultReceiver()
	r.Auth.TokenFile = "/run/secrets/tokens"
	assert.NoError(t, r.CheckAuth())
}
