package testenv

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// NATS is an in-process nats-server with JetStream on a random loopback
// port and a temporary store directory.
type NATS struct {
	t    testing.TB
	opts *server.Options
	srv  *server.Server
	// URL is the client URL; it stays the same across Restart.
	URL string
}

// StartNATS starts a JetStream server for the test and stops it at cleanup.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	return StartNATSWith(t, &server.Options{ServerName: "stormweir-test"})
}

// StartNATSWith starts a JetStream server with opts (users, accounts,
// TLS; e.g. parsed from a configuration file with
// server.ProcessConfigFile) on a random loopback port with a temporary
// store, and stops it at cleanup.
func StartNATSWith(t testing.TB, opts *server.Options) *NATS {
	t.Helper()
	opts.Host = "127.0.0.1"
	opts.Port = server.RANDOM_PORT
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	// STORMWEIR_TEST_NATS_LOG=1 shows the server's log, to see why it
	// refused a client or did not start.
	opts.NoLog, opts.NoSigs = os.Getenv("STORMWEIR_TEST_NATS_LOG") == "", true
	// Limits, not allocations: the streams' default max_bytes add up to
	// more than a small default store limit would allow. A test of a full
	// store sets its own.
	if opts.JetStreamMaxMemory == 0 {
		opts.JetStreamMaxMemory = 1 << 30
	}
	if opts.JetStreamMaxStore == 0 {
		opts.JetStreamMaxStore = 1 << 40
	}
	n := &NATS{t: t, opts: opts}
	n.start()
	n.URL = n.srv.ClientURL()
	// Keep the port on restart.
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

func (n *NATS) start() {
	n.t.Helper()
	srv, err := server.NewServer(n.opts)
	require.NoError(n.t, err, "creating nats-server")
	if !n.opts.NoLog {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatalf("nats-server not ready on %s:%d", n.opts.Host, n.opts.Port)
	}
	n.srv = srv
}

// Server returns the running server.
func (n *NATS) Server() *server.Server { return n.srv }

// Stop shuts the server down (messages on disk are kept for Restart).
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// Restart starts the server again on the same port with the same store.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Stop()
	n.start()
}

// RestartWith stops the server, lets change edit its options (users,
// limits) and starts it again on the same port with the same store. It
// stands for a configuration change that disconnects clients, without
// nats-server's in-process ReloadOptions, which races with the server's
// own goroutines under the race detector.
func (n *NATS) RestartWith(change func(*server.Options)) {
	n.t.Helper()
	n.Stop()
	change(n.opts)
	n.start()
}
