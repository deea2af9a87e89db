package bus_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// secretFile writes content to a file of the test's own, as a mounted
// Secret would be.
func secretFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// busConfig is the default bus section pointed at url.
func busConfig(url string) config.Bus {
	cfg := config.DefaultBus()
	cfg.URL = url
	return cfg
}

// connect connects with cfg, closing the connection at cleanup.
func connect(t testing.TB, cfg config.Bus) (*bus.Conn, error) {
	t.Helper()
	require.NoError(t, cfg.Validate(), "the configuration under test is valid")
	c, err := bus.Connect(cfg, "connect-test", quiet())
	if err == nil {
		t.Cleanup(c.Close)
	}
	return c, err
}

// requireWorks asserts that c is connected and JetStream answers it.
func requireWorks(t testing.TB, c *bus.Conn) {
	t.Helper()
	require.Eventually(t, c.NC.IsConnected, 10*time.Second, 10*time.Millisecond, "connected")
	require.NoError(t, c.Check(context.Background()), "jetstream answers")
}

func TestConnect_userWithPasswordFile(t *testing.T) {
	n := testenv.StartNATSWith(t, &server.Options{Users: []*server.User{{Username: "deduper", Password: "pw-first-0123456789"}}})
	cfg := busConfig(n.URL)
	cfg.Auth.User = "deduper"

	t.Run("the right password", func(t *testing.T) {
		cfg := cfg
		cfg.Auth.PasswordFile = secretFile(t, "password", "pw-first-0123456789\n")
		c, err := connect(t, cfg)
		require.NoError(t, err)
		requireWorks(t, c)
	})
	t.Run("a wrong password is refused at start-up", func(t *testing.T) {
		cfg := cfg
		cfg.Auth.PasswordFile = secretFile(t, "password", "not-the-password")
		_, err := connect(t, cfg)
		require.Error(t, err)
		assert.ErrorIs(t, err, nats.ErrAuthorization)
		assert.Contains(t, err.Error(), `as user "deduper" (bus.auth.password_file `)
	})
	t.Run("an unreadable password file", func(t *testing.T) {
		cfg := cfg
		cfg.Auth.PasswordFile = filepath.Join(t.TempDir(), "missing")
		_, err := connect(t, cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "reading bus.auth.password_file: open "+cfg.Auth.PasswordFile)
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err := connect(t, busConfig(n.URL))
		assert.ErrorIs(t, err, nats.ErrAuthorization)
		assert.ErrorContains(t, err, "as an anonymous client: nats: Authorization Violation")
	})
}

func TestConnect_rereadsThePasswordFileOnReconnect(t *testing.T) {
	opts := &server.Options{Users: []*server.User{{Username: "writer", Password: "pw-before-rotation"}}}
	n := testenv.StartNATSWith(t, opts)
	cfg := busConfig(n.URL)
	cfg.Auth.User, cfg.Auth.PasswordFile = "writer", secretFile(t, "password", "pw-before-rotation")
	c, err := connect(t, cfg)
	require.NoError(t, err)
	requireWorks(t, c)

	// Rotate: the Secret changes first, then the server's configuration,
	// which disconnects the client; it must reconnect with the new file.
	require.NoError(t, os.WriteFile(cfg.Auth.PasswordFile, []byte("pw-after-rotation"), 0o600))
	n.RestartWith(func(o *server.Options) {
		o.Users = []*server.User{{Username: "writer", Password: "pw-after-rotation"}}
	})

	require.Eventually(t, func() bool { return c.NC.Stats().Reconnects >= 1 && c.NC.IsConnected() }, 15*time.Second, 10*time.Millisecond,
		"reconnected with the rotated password")
	require.NoError(t, c.Check(context.Background()))
}

func TestConnect_tokenFile(t *testing.T) {
	n := testenv.StartNATSWith(t, &server.Options{Authorization: "token-0123456789abcdef"})
	cfg := busConfig(n.URL)
	cfg.Auth.TokenFile = secretFile(t, "token", "token-0123456789abcdef\n")
	c, err := connect(t, cfg)
	require.NoError(t, err)
	requireWorks(t, c)

	cfg.Auth.TokenFile = secretFile(t, "token", "another-token")
	_, err = connect(t, cfg)
	assert.ErrorIs(t, err, nats.ErrAuthorization)
	assert.ErrorContains(t, err, "as the token in bus.auth.token_file")
}

func TestConnect_nkeySeedFile(t *testing.T) {
	user, pub := newKey(t, nkeys.CreateUser)
	seed, err := user.Seed()
	require.NoError(t, err)
	n := testenv.StartNATSWith(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	cfg := busConfig(n.URL)
	cfg.Auth.NKeyFile = secretFile(t, "seed", string(seed))
	c, err := connect(t, cfg)
	require.NoError(t, err)
	requireWorks(t, c)

	other, _ := newKey(t, nkeys.CreateUser)
	otherSeed, err := other.Seed()
	require.NoError(t, err)
	cfg.Auth.NKeyFile = secretFile(t, "seed", string(otherSeed))
	_, err = connect(t, cfg)
	assert.ErrorIs(t, err, nats.ErrAuthorization, "an NKEY the server does not know")

	cfg.Auth.NKeyFile = secretFile(t, "seed", "not a seed")
	_, err = connect(t, cfg)
	assert.ErrorContains(t, err, "reading bus.auth.nkey_file")
}

// newKey returns a key pair made by create and its public key.
func newKey(t testing.TB, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := create()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	return kp, pub
}

// claims are JWT claims that a key signs.
type claims interface {
	Encode(nkeys.KeyPair) (string, error)
}

// encode signs c with key.
func encode(t testing.TB, c claims, key nkeys.KeyPair) string {
	t.Helper()
	s, err := c.Encode(key)
	require.NoError(t, err)
	return s
}

func TestConnect_credsFile(t *testing.T) {
	// An operator-mode server: the operator signs the accounts, the
	// account signs the user, and the creds file carries the user's JWT
	// and seed. JetStream in operator mode needs a system account.
	operator, operatorPub := newKey(t, nkeys.CreateOperator)
	oc := jwt.NewOperatorClaims(operatorPub)
	operatorClaims, err := jwt.DecodeOperatorClaims(encode(t, oc, operator))
	require.NoError(t, err)

	account, accountPub := newKey(t, nkeys.CreateAccount)
	ac := jwt.NewAccountClaims(accountPub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	_, systemPub := newKey(t, nkeys.CreateAccount)
	resolver := &server.MemAccResolver{}
	require.NoError(t, resolver.Store(accountPub, encode(t, ac, operator)))
	require.NoError(t, resolver.Store(systemPub, encode(t, jwt.NewAccountClaims(systemPub), operator)))
	n := testenv.StartNATSWith(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{operatorClaims}, AccountResolver: resolver, SystemAccount: systemPub})

	user, userPub := newKey(t, nkeys.CreateUser)
	seed, err := user.Seed()
	require.NoError(t, err)
	creds, err := jwt.FormatUserConfig(encode(t, jwt.NewUserClaims(userPub), account), seed)
	require.NoError(t, err)

	cfg := busConfig(n.URL)
	cfg.Auth.CredsFile = secretFile(t, "user.creds", string(creds))
	c, err := connect(t, cfg)
	require.NoError(t, err)
	requireWorks(t, c)

	cfg.Auth.CredsFile = secretFile(t, "user.creds", "-----BEGIN NATS USER JWT-----\nnot a jwt\n------END NATS USER JWT------\n")
	_, err = connect(t, cfg)
	assert.ErrorContains(t, err, "reading bus.auth.creds_file")
}

func TestConnect_mutualTLS(t *testing.T) {
	ca := testenv.NewCA(t, "stormweir-test-ca")
	// The server's certificate names a host, not the loopback address the
	// test dials, so only bus.tls.server_name makes it verify.
	srvCert := ca.Issue(t, "nats", "nats.stormweir.test")
	clientCert := ca.Issue(t, "stormweir-deduper")
	n := testenv.StartNATSWith(t, &server.Options{TLSConfig: ca.ServerConfig(t, srvCert, true), TLSVerify: true, TLSTimeout: 5})
	good := busConfig(n.URL)
	good.TLS = config.BusTLS{CAFile: ca.File, CertFile: clientCert.CertFile, KeyFile: clientCert.KeyFile, ServerName: "nats.stormweir.test"}

	c, err := connect(t, good)
	require.NoError(t, err)
	requireWorks(t, c)
	state, err := c.NC.TLSConnectionState()
	require.NoError(t, err)
	assert.True(t, state.HandshakeComplete)

	// The server's refusal of a client certificate arrives either as the
	// TLS alert or as the connection closing right after the handshake.
	const refusedCert = `(nats: tls error: connection closed by remote after TLS handshake|remote error: tls: certificate required)`
	other := testenv.NewCA(t, "another-ca")
	intruder := other.Issue(t, "intruder")
	cases := map[string]struct {
		set  func(*config.BusTLS)
		want string
	}{
		"no client certificate":             {func(c *config.BusTLS) { c.CertFile, c.KeyFile = "", "" }, refusedCert},
		"another CA":                        {func(c *config.BusTLS) { c.CAFile = other.File }, regexp.QuoteMeta("certificate signed by unknown authority")},
		"the server's name is not the host": {func(c *config.BusTLS) { c.ServerName = "" }, regexp.QuoteMeta("cannot validate certificate for 127.0.0.1")},
		"a client certificate of another CA": {func(c *config.BusTLS) {
			c.CertFile, c.KeyFile = intruder.CertFile, intruder.KeyFile
		}, refusedCert},
		"an unreadable CA file":               {func(c *config.BusTLS) { c.CAFile += ".missing" }, regexp.QuoteMeta("reading bus.tls.ca_file: open ")},
		"a key that is not the certificate's": {func(c *config.BusTLS) { c.KeyFile = srvCert.KeyFile }, regexp.QuoteMeta("reading bus.tls.cert_file and bus.tls.key_file")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := good
			tc.set(&cfg.TLS)
			_, err := connect(t, cfg)
			require.Error(t, err)
			assert.Regexp(t, tc.want, err.Error())
		})
	}
}

func TestConnect_waitsForAServerThatIsNotUpYet(t *testing.T) {
	n := testenv.StartNATS(t)
	n.Stop()
	c, err := connect(t, busConfig(n.URL))
	require.NoError(t, err, "nobody answering is waited for, not an error")
	assert.False(t, c.NC.IsConnected())
	n.Restart()
	requireWorks(t, c)
}
