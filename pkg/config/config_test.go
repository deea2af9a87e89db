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

func TestLoad_reportsEveryUnknownKeyAndVariableAtOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "typos.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
dedupe: {window: 5m}
dedup: {windw: 5m}
writer:
  priority:
    - {severity: critical, environment: production, priority: P0}
    - {severty: warning, priority: P1}
`), 0o600))
	t.Setenv("STORMWEIR_DEDUP_WINDOWW", "5m")
	t.Setenv("STORMWEIR_NOT_A_KEY_AT_ALL", "1")

	_, err := config.Load("test", []string{"--config", file, "--set", "bus.prefx=a", "--set", "dedup.window=soon"})
	require.Error(t, err)
	for _, want := range []string{
		"unknown environment variable STORMWEIR_DEDUP_WINDOWW (did you mean STORMWEIR_DEDUP_WINDOW, which sets dedup.window?)",
		"unknown environment variable STORMWEIR_NOT_A_KEY_AT_ALL\n",
		`--set "bus.prefx=a": unknown key "bus.prefx" (did you mean bus.prefix?)`,
		"unknown key dedupe (did you mean dedup?)",
		"unknown key dedup.windw (did you mean dedup.window?)",
		"unknown key writer.priority[1].severty (did you mean writer.priority[1].severity?)",
		"'dedup.window' time: invalid duration",
	} {
		assert.Contains(t, err.Error()+"\n", want)
	}
}

func TestLoad_acceptsTheVariablesOfStormweirsTools(t *testing.T) {
	for _, name := range config.OtherEnv {
		if name != "STORMWEIR_CONFIG" { // read as the file, tested above
			t.Setenv(name, "set")
		}
	}
	t.Setenv("STORMWEIR_WRITER_PRIORITY", "") // a list key is a key too
	t.Setenv("STORMWEIR_RECEIVER_AUTH_TOKEN_FILE", "/run/secrets/tokens")
	l, err := config.Load("test", nil)
	require.NoError(t, err)
	assert.Equal(t, "/run/secrets/tokens", l.Config.Receiver.Auth.TokenFile)
}

func TestValidate_checksRulesAcrossFields(t *testing.T) {
	c := config.Default()
	c.Writer.Concurrency = c.Bus.Consumer.MaxAckPending + 1
	c.Writer.Environment.OverrideConfigMap = "no-slash"
	c.Aggregator.Scope = []string{"alertname", "namespace", "alertname", ""}
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"writer.concurrency: 4097 exceeds bus.consumer.max_ack_pending 4096",
		`writer.environment.override_configmap: "no-slash" is not namespace/name`,
		`aggregator.scope[2]: "alertname" is empty or repeated`,
		`aggregator.scope[3]: "" is empty or repeated`,
	} {
		assert.Contains(t, err.Error(), want)
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
	r = config.DefaultReceiver()
	r.Auth.TokenReview.Enabled = true
	assert.NoError(t, r.CheckAuth(), "TokenReview alone authenticates")
}

func TestValidate_tokenReview(t *testing.T) {
	c := config.Default()
	c.Receiver.Auth.TokenReview.Enabled = true
	c.Receiver.Auth.TokenReview.CacheSize = 0
	c.Receiver.Auth.TokenReview.ReviewsPerSecond = 0
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"receiver.auth.token_review.audiences: name the audience",
		"receiver.auth.token_review.cache_size: 0 is below 1",
		"receiver.auth.token_review: reviews_per_second must be above 0",
	} {
		assert.Contains(t, err.Error(), want)
	}
	c.Receiver.Auth.TokenReview = config.DefaultTokenReview()
	c.Receiver.Auth.TokenReview.Enabled = true
	c.Receiver.Auth.TokenReview.Audiences = []string{"stormweir"}
	assert.NoError(t, c.Validate())

	t.Setenv("STORMWEIR_RECEIVER_AUTH_TOKEN_REVIEW_AUDIENCES", "stormweir,other")
	l, err := config.Load("test", []string{"--set", "receiver.auth.token_review.enabled=true"})
	require.NoError(t, err)
	assert.Equal(t, []string{"stormweir", "other"}, l.Config.Receiver.Auth.TokenReview.Audiences)
	assert.Equal(t, 10*time.Second, l.Config.Receiver.Auth.TokenReview.CacheTTL)
}

func TestValidate_busSecurity(t *testing.T) {
	cases := map[string]struct {
		set  func(b *config.Bus)
		want string
	}{
		"user and token": {func(b *config.Bus) {
			b.Auth.User, b.Auth.PasswordFile, b.Auth.TokenFile = "receiver", "/s/password", "/s/token"
		}, "bus.auth: user and token_file are alternatives; set one"},
		"nkey and creds":         {func(b *config.Bus) { b.Auth.NKeyFile, b.Auth.CredsFile = "/s/seed", "/s/creds" }, "bus.auth: nkey_file and creds_file are alternatives"},
		"user without password":  {func(b *config.Bus) { b.Auth.User = "receiver" }, "bus.auth.password_file: required with bus.auth.user"},
		"password without user":  {func(b *config.Bus) { b.Auth.PasswordFile = "/s/password" }, "bus.auth.user: required with bus.auth.password_file"},
		"cert without key":       {func(b *config.Bus) { b.TLS.CertFile = "/s/tls.crt" }, "bus.tls.key_file: required with bus.tls.cert_file"},
		"key without cert":       {func(b *config.Bus) { b.TLS.KeyFile = "/s/tls.key" }, "bus.tls.cert_file: required with bus.tls.key_file"},
		"credentials in the url": {func(b *config.Bus) { b.URL, b.Auth.TokenFile = "nats://a:4222,nats://tok@b:4222", "/s/token" }, "bus.url: carries credentials as well as bus.auth.token_file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := config.DefaultBus()
			tc.set(&b)
			err := b.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "tok@", "an error never repeats a credential")
		})
	}

	b := config.DefaultBus()
	b.Auth.User, b.Auth.PasswordFile = "receiver", "/s/password"
	b.TLS = config.BusTLS{CAFile: "/s/ca.crt", CertFile: "/s/tls.crt", KeyFile: "/s/tls.key", ServerName: "nats.internal"}
	assert.NoError(t, b.Validate(), "files are read when connecting, not when validating")
}

func TestValidate_redisSecurity(t *testing.T) {
	cases := map[string]struct {
		set  func(r *config.Redis)
		want string
	}{
		"password twice": {func(r *config.Redis) { r.Password, r.PasswordFile = "x", "/s/pw" }, "redis.password and redis.password_file: set one"},
		"sentinel password twice": {func(r *config.Redis) {
			r.Mode, r.MasterName, r.SentinelPassword, r.SentinelPasswordFile = "sentinel", "m", "x", "/s/spw"
		}, "redis.sentinel_password and redis.sentinel_password_file: set one"},
		"sentinel password in single mode": {func(r *config.Redis) { r.SentinelPasswordFile = "/s/spw" }, "redis.sentinel_password: only used in sentinel mode"},
		"tls file without tls":             {func(r *config.Redis) { r.TLS.CAFile = "/s/ca.crt" }, "redis.tls.ca_file: set, but redis.tls.enabled is false"},
		"cert without key":                 {func(r *config.Redis) { r.TLS.Enabled, r.TLS.CertFile = true, "/s/tls.crt" }, "redis.tls.key_file: required with redis.tls.cert_file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := config.DefaultRedis()
			tc.set(&r)
			err := r.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoad_securityKeysFromTheEnvironment(t *testing.T) {
	t.Setenv("STORMWEIR_BUS_AUTH_USER", "deduper")
	t.Setenv("STORMWEIR_BUS_AUTH_PASSWORD_FILE", "/etc/stormweir/nats/password")
	t.Setenv("STORMWEIR_BUS_TLS_CA_FILE", "/etc/stormweir/tls/ca.crt")
	t.Setenv("STORMWEIR_BUS_MANAGE_STREAMS", "false")
	t.Setenv("STORMWEIR_REDIS_PASSWORD_FILE", "/etc/stormweir/redis/password")
	t.Setenv("STORMWEIR_REDIS_TLS_ENABLED", "true")
	t.Setenv("STORMWEIR_REDIS_TLS_SERVER_NAME", "redis.internal")
	l, err := config.Load("test", nil)
	require.NoError(t, err)
	c := l.Config
	assert.Equal(t, config.BusAuth{User: "deduper", PasswordFile: "/etc/stormweir/nats/password"}, c.Bus.Auth)
	assert.Equal(t, "/etc/stormweir/tls/ca.crt", c.Bus.TLS.CAFile)
	assert.False(t, c.Bus.ManageStreams)
	assert.Equal(t, "/etc/stormweir/redis/password", c.Redis.PasswordFile)
	assert.Equal(t, config.RedisTLS{Enabled: true, ServerName: "redis.internal"}, c.Redis.TLS)
}

func TestPrint_redactsCredentialsInTheBusURL(t *testing.T) {
	c := config.Default()
	c.Bus.URL = "nats://stage:s3cret-pw@nats-0:4222, nats://t0ken-value@nats-1:4222,nats://nats-2:4222"
	c.Bus.Auth.PasswordFile = "/etc/stormweir/nats/password"
	c.Redis.SentinelPassword = "sentinel-secret"
	var buf bytes.Buffer
	require.NoError(t, config.Print(&buf, c))
	out := buf.String()
	for _, secret := range []string{"s3cret-pw", "t0ken-value", "sentinel-secret"} {
		assert.NotContains(t, out, secret)
	}
	assert.Contains(t, out, "nats://stage:redacted@nats-0:4222")
	assert.Contains(t, out, "nats://nats-2:4222")
	assert.Contains(t, out, "/etc/stormweir/nats/password", "paths of secret files are not secrets")
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "password")
	require.NoError(t, os.WriteFile(ok, []byte("pa ss\n"), 0o600))
	got, err := config.ReadSecret("redis.password_file", ok)
	require.NoError(t, err)
	assert.Equal(t, "pa ss", got, "the trailing line break goes, spaces stay")

	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	_, err = config.ReadSecret("redis.password_file", empty)
	assert.ErrorContains(t, err, "reading redis.password_file: "+empty+" is empty")

	_, err = config.ReadSecret("bus.auth.password_file", filepath.Join(dir, "missing"))
	assert.ErrorContains(t, err, "reading bus.auth.password_file: open ")
}

func TestLoad_tracingFromTheEnvironment(t *testing.T) {
	t.Setenv("STORMWEIR_TRACING_ENDPOINT", "http://otel-collector:4318")
	t.Setenv("STORMWEIR_TRACING_SAMPLE_RATIO", "0.25")
	l, err := config.Load("test", nil)
	require.NoError(t, err)
	assert.Equal(t, config.Tracing{Endpoint: "http://otel-collector:4318", SampleRatio: 0.25}, l.Config.Tracing)
	assert.True(t, l.Config.Tracing.Enabled())
}

func TestValidate_tracing(t *testing.T) {
	assert.Equal(t, "", config.Default().Tracing.Endpoint, "off by default")
	for _, tc := range []struct {
		tracing config.Tracing
		want    string
	}{
		{config.Tracing{Endpoint: "otel-collector:4318", SampleRatio: 1}, `tracing.endpoint: "otel-collector:4318" is not an http:// or https:// URL with a host`},
		{config.Tracing{Endpoint: "grpc://collector:4317", SampleRatio: 1}, "tracing.endpoint"},
		{config.Tracing{SampleRatio: 1.5}, "tracing.sample_ratio: 1.5 is not between 0 and 1"},
		{config.Tracing{SampleRatio: -0.1}, "tracing.sample_ratio"},
	} {
		c := config.Default()
		c.Tracing = tc.tracing
		err := c.Validate()
		require.Error(t, err, "%+v", tc.tracing)
		assert.Contains(t, err.Error(), tc.want)
	}
	c := config.Default()
	c.Tracing = config.Tracing{Endpoint: "https://collector.example:4318/v1/traces", SampleRatio: 0}
	assert.NoError(t, c.Validate())
}

func TestValidate_processingStreamsNeverAgeOut(t *testing.T) {
	c := config.Default()
	c.Bus.Signals.MaxAge = 7 * 24 * time.Hour
	c.Bus.Archive.Incidents.MaxBytes = 0
	c.Bus.DLQ.MaxMsgs = -2
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"bus.signals.max_age: must be 0: the stream holds messages until every stage has processed them, and an age limit would drop unprocessed ones; bus.archive.signals.max_age is how long reviews can look back",
		"bus.archive.incidents.max_bytes: 0 must be positive, or -1 for no bound",
		"bus.dlq.max_msgs: -2 must be positive, or -1 for no bound",
	} {
		assert.Contains(t, err.Error(), want)
	}
	c = config.Default()
	c.Bus.Archive.Signals.MaxAge = 30 * 24 * time.Hour
	assert.NoError(t, c.Validate(), "an archive ages out on its own terms")
}
