package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// secrets are a secured run's credentials and certificates, written as
// files the way Kubernetes mounts Secrets.
type secrets struct {
	tb   testing.TB
	root string
	ca   *testenv.CA
	// natsCert serves NATS; client is every client's certificate.
	natsCert, client testenv.Cert
	// passwordFiles of the NATS users, by user.
	passwordFiles map[string]string
	passwords     map[string]string
	// redis is the store's password and TLS.
	redis             testenv.RedisSecurity
	redisPasswordFile string
}

// natsUsers are the users of deploy/nats/accounts.conf.
var natsUsers = []string{Receiver, Deduper, Aggregator, Writer, "admin"}

func newSecrets(tb testing.TB, dir string) *secrets {
	tb.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	ca := testenv.NewCA(tb, "stormweir-pipeline-ca")
	s := &secrets{
		tb: tb, root: root, ca: ca,
		natsCert:      ca.Issue(tb, "nats", "127.0.0.1"),
		client:        ca.Issue(tb, "stormweir"),
		passwordFiles: map[string]string{},
		passwords:     map[string]string{},
	}
	sdir := filepath.Join(dir, "secrets")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		tb.Fatalf("creating %s: %v", sdir, err)
	}
	write := func(name, pw string) string {
		path := filepath.Join(sdir, name)
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			tb.Fatalf("writing %s: %v", path, err)
		}
		return path
	}
	for _, u := range natsUsers {
		s.passwords[u] = u + "-" + testenv.RandomID() + testenv.RandomID()
		s.passwordFiles[u] = write("nats-"+u, s.passwords[u])
	}
	s.redis = testenv.RedisSecurity{
		Password: "redis-" + testenv.RandomID() + testenv.RandomID(),
		CA:       ca, Cert: ca.Issue(tb, "redis", "127.0.0.1"), ClientCert: s.client,
	}
	s.redisPasswordFile = write("redis", s.redis.Password)
	return s
}

// natsConfig writes the server's configuration into dir and returns its
// path: JetStream in store, TLS requiring client certificates, as the
// commented block of deploy/nats/nats-server.conf has it, and a copy of
// deploy/nats/accounts.conf as shipped. (The shipped nats-server.conf
// names a store directory of its own, which a -sd flag may not repeat.)
func (s *secrets) natsConfig(dir, store string) string {
	accounts, err := os.ReadFile(filepath.Join(s.root, "deploy", "nats", "accounts.conf"))
	if err != nil {
		s.tb.Fatalf("reading the shipped accounts.conf: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o600); err != nil {
		s.tb.Fatalf("copying accounts.conf: %v", err)
	}
	conf := fmt.Sprintf(`jetstream { store_dir: %q }
tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  verify: true
}
include ./accounts.conf
`, store, s.natsCert.CertFile, s.natsCert.KeyFile, s.ca.File)
	path := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		s.tb.Fatalf("writing %s: %v", path, err)
	}
	return path
}

// natsEnv holds the users' passwords, which accounts.conf reads from the
// environment.
func (s *secrets) natsEnv() []string {
	var env []string
	for _, u := range natsUsers {
		env = append(env, "STORMWEIR_"+strings.ToUpper(u)+"_PASSWORD="+s.passwords[u])
	}
	return env
}

// harnessNATS are the harness's own connection options: the admin user.
func (s *secrets) harnessNATS() []nats.Option {
	return []nats.Option{nats.UserInfo("admin", s.passwords["admin"]), nats.RootCAs(s.ca.File), nats.ClientCert(s.client.CertFile, s.client.KeyFile)}
}

// configure sets what every stage shares: TLS to NATS and Redis, the
// Redis password file, and the prefix accounts.conf names.
func (s *secrets) configure(cfg *config.Config) {
	cfg.Bus.Prefix = config.DefaultBus().Prefix
	cfg.Bus.TLS = config.BusTLS{CAFile: s.ca.File, CertFile: s.client.CertFile, KeyFile: s.client.KeyFile}
	cfg.Redis.PasswordFile = s.redisPasswordFile
	cfg.Redis.TLS = config.RedisTLS{Enabled: true, CAFile: s.ca.File, CertFile: s.client.CertFile, KeyFile: s.client.KeyFile}
}

// stageEnv is what differs by stage, set in the environment as a
// Deployment would: its NATS user, and whether it manages the streams.
func (s *secrets) stageEnv(stage string) []string {
	return []string{
		"STORMWEIR_BUS_AUTH_USER=" + stage,
		"STORMWEIR_BUS_AUTH_PASSWORD_FILE=" + s.passwordFiles[stage],
		"STORMWEIR_BUS_MANAGE_STREAMS=" + strconv.FormatBool(stage == Writer),
	}
}
