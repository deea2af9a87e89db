package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/stormweir/stormweir/pkg/config"
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
}

// Connect dials NATS and keeps reconnecting for ever: a stage whose bus is
// away waits for it (and reports not ready) rather than exiting. The
// credentials and TLS files of cfg are read first, so a missing file stops
// the process naming its key; a server that refuses the credentials or the
// certificate at the first attempt stops it too, since waiting will not
// change the answer. name identifies the connection on the server and
// starts its inboxes (_INBOX.<name>.), which a secured account grants each
// stage alone. extra options come last, e.g. nats.InProcessServer for an
// embedded server.
func Connect(cfg config.Bus, name string, log *slog.Logger, extra ...nats.Option) (*Conn, error) {
	return connect(cfg, name, log, true, extra)
}

// Dial is Connect for a command a person waits on (a replay, a review):
// a server that does not answer is an error at once, not waited for.
func Dial(cfg config.Bus, name string, log *slog.Logger, extra ...nats.Option) (*Conn, error) {
	return connect(cfg, name, log, false, extra)
}

func connect(cfg config.Bus, name string, log *slog.Logger, wait bool, extra []nats.Option) (*Conn, error) {
	if name == "" || strings.ContainsAny(name, ".*> \t\r\n") {
		return nil, fmt.Errorf("nats connection name %q: must be one subject token (no dots, wildcards or spaces)", name)
	}
	security, err := securityOptions(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("connecting to nats %s: %w", config.RedactURLs(cfg.URL), err)
	}
	reconnects, asyncErrs := newLogLimiter(log), newLogLimiter(log)
	opts := []nats.Option{
		nats.Name(name),
		nats.CustomInboxPrefix(InboxPrefix(name)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1), // publishes fail fast while disconnected instead of buffering unacked
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrl()) }),
		// A refused password or certificate after a rotation, or a
		// permission the account does not grant, is only ever reported
		// here: say it, once a minute per distinct error.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { reconnects.warn("nats reconnect failed", err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { asyncErrs.error("nats refused an operation", err) }),
	}
	opts = append(append(opts, security...), extra...)
	// The first attempt does not retry, so a refusal comes back here; only
	// a server that does not answer (yet) is waited for.
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		if refused(err) {
			return nil, fmt.Errorf("connecting to nats %s as %s: %w", config.RedactURLs(cfg.URL), describeAuth(cfg), err)
		}
		if !wait {
			return nil, fmt.Errorf("connecting to nats %s: %w", config.RedactURLs(cfg.URL), err)
		}
		log.Warn("nats not reachable yet; waiting", "url", config.RedactURLs(cfg.URL), "err", err)
		nc, err = nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
		if err != nil {
			return nil, fmt.Errorf("connecting to nats %s: %w", config.RedactURLs(cfg.URL), err)
		}
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384), jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream context: %w", err)
	}
	return &Conn{NC: nc, JS: js}, nil
}

// InboxPrefix is the inbox prefix of the connection called name: replies
// to its requests (JetStream API answers, pulled messages, publish
// acknowledgements) arrive under InboxPrefix(name) + ".>".
func InboxPrefix(name string) string { return "_INBOX." + name }

// securityOptions turns cfg.Auth and cfg.TLS into connection options,
// reading every file once now so that a wrong path is a start-up error.
// The callbacks read them again on each reconnect, so rotated secrets and
// certificates are used without a restart.
func securityOptions(cfg config.Bus, log *slog.Logger) ([]nats.Option, error) {
	var opts []nats.Option
	a := cfg.Auth
	switch {
	case a.User != "":
		if _, err := config.ReadSecret("bus.auth.password_file", a.PasswordFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfoHandler(func() (string, string) {
			pw, err := config.ReadSecret("bus.auth.password_file", a.PasswordFile)
			if err != nil {
				log.Error("nats credentials unreadable", "err", err)
			}
			return a.User, pw
		}))
	case a.TokenFile != "":
		if _, err := config.ReadSecret("bus.auth.token_file", a.TokenFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.TokenHandler(func() string {
			tok, err := config.ReadSecret("bus.auth.token_file", a.TokenFile)
			if err != nil {
				log.Error("nats credentials unreadable", "err", err)
			}
			return tok
		}))
	case a.NKeyFile != "":
		// Reads the seed now and on every signature request.
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("reading bus.auth.nkey_file: %w", err)
		}
		opts = append(opts, o)
	case a.CredsFile != "":
		if err := checkCreds(a.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}

	t := cfg.TLS
	if !t.Enabled() {
		return opts, nil
	}
	opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}))
	var certCB nats.TLSCertHandler
	var rootsCB nats.RootCAsHandler
	if t.CAFile != "" {
		rootsCB = func() (*x509.CertPool, error) { return config.LoadCertPool("bus.tls.ca_file", t.CAFile) }
	}
	if t.CertFile != "" {
		certCB = func() (tls.Certificate, error) { return config.LoadKeyPair("bus.tls", t.CertFile, t.KeyFile) }
	}
	if certCB != nil || rootsCB != nil {
		// Calls both once now, so an unreadable file fails here.
		opts = append(opts, nats.ClientTLSConfig(certCB, rootsCB))
	}
	return opts, nil
}

// checkCreds reads a creds file the way the client will on connect.
func checkCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading bus.auth.creds_file: %w", err)
	}
	defer clear(b)
	if _, err := nkeys.ParseDecoratedJWT(b); err != nil {
		return fmt.Errorf("reading bus.auth.creds_file %s: no user JWT: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("reading bus.auth.creds_file %s: no NKEY seed: %w", path, err)
	}
	kp.Wipe()
	return nil
}

// refused reports whether the server turned the connection down for its
// credentials or TLS, as opposed to not answering.
func refused(err error) bool {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired,
		nats.ErrTLS, nats.ErrSecureConnRequired, nats.ErrSecureConnWanted} {
		if errors.Is(err, e) {
			return true
		}
	}
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &certErr) || strings.Contains(err.Error(), "tls: ")
}

// describeAuth names the credentials in use for an error message.
func describeAuth(cfg config.Bus) string {
	a := cfg.Auth
	who := "an anonymous client"
	switch {
	case a.User != "":
		who = fmt.Sprintf("user %q (bus.auth.password_file %s)", a.User, a.PasswordFile)
	case a.TokenFile != "":
		who = "the token in bus.auth.token_file " + a.TokenFile
	case a.NKeyFile != "":
		who = "the NKEY in bus.auth.nkey_file " + a.NKeyFile
	case a.CredsFile != "":
		who = "the credentials in bus.auth.creds_file " + a.CredsFile
	}
	if cfg.TLS.CertFile != "" {
		who += " with client certificate " + cfg.TLS.CertFile
	}
	return who
}

// logLimiter logs an error again only when it changes or a minute has
// passed: a reconnect loop or a denied pull repeats every few hundred
// milliseconds.
type logLimiter struct {
	log  *slog.Logger
	mu   sync.Mutex
	last string
	at   time.Time
}

func newLogLimiter(log *slog.Logger) *logLimiter { return &logLimiter{log: log} }

func (l *logLimiter) warn(msg string, err error)  { l.emit(slog.LevelWarn, msg, err) }
func (l *logLimiter) error(msg string, err error) { l.emit(slog.LevelError, msg, err) }

func (l *logLimiter) emit(level slog.Level, msg string, err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	e := err.Error()
	if e == l.last && time.Since(l.at) < time.Minute {
		l.mu.Unlock()
		return
	}
	l.last, l.at = e, time.Now()
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, "err", err)
}

// Close drains the connection: pending publishes are flushed first.
func (c *Conn) Close() {
	if c == nil || c.NC == nil {
		return
	}
	_ = c.NC.Drain()
	deadline := time.Now().Add(5 * time.Second)
	for !c.NC.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c.NC.Close()
}

// Check reports whether JetStream answers; readiness probes call it.
func (c *Conn) Check(ctx context.Context) error {
	if !c.NC.IsConnected() {
		return fmt.Errorf("nats: %s", c.NC.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.JS.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}
