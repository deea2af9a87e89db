package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/reviewui"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/token"
)

// defaultReviewListen is where `stormweir review` serves: loopback, so the
// pages are not on the network unless asked for.
const defaultReviewListen = "127.0.0.1:8090"

// newReviewCommand is `stormweir review`: the review pages in a browser.
func newReviewCommand() *cobra.Command {
	var f reviewFlags
	cmd := &cobra.Command{
		Use:   "review [flags]",
		Short: "Serve incident review in the browser: incidents, timelines, what-if, now",
		Long: `Serve a read-only web UI over a pipeline's recorded streams, the same replay,
explain and what-if engine as 'stormweir replay' and 'explain':

  /incidents      the incidents and storms of a time range and label
                  matchers, with their counts, storm, environment,
                  priority, request and phase
  /incidents/ID   an incident's or storm's timeline: signals, decisions
                  and request writes on a time axis beside the story
                  'explain' tells; a storm's members joining and the
                  resources they hit
  /whatif         the dedup and storm settings as a form; the difference
                  from what was recorded, the incidents that change linked
  /now            intake and decision rates, open storms, consumer lag and
                  dead letters, refreshed every five seconds

It listens on 127.0.0.1:8090 (--listen to change it). People sign in with
one of the receiver's bearer tokens (receiver.auth.tokens or token_file;
with --data-dir the all-in-one's generated token): the login form keeps it
in an HttpOnly cookie; scripts send "Authorization: Bearer <token>". With
receiver.auth.disabled the pages are open. NATS is not needed to start: a
page read while it does not answer says so (503).` + cli.ConfigHelp(),
		Example: `  stormweir review --nats-url nats://127.0.0.1:4222 --set receiver.auth.token_file=/etc/stormweir/tokens
  stormweir review --data-dir data --listen 127.0.0.1:8090`,
		Args: cli.NoArgs,
	}
	f.cf = cli.AddConfig(cmd, nil)
	fs := cmd.Flags()
	fs.StringVar(&f.prefix, "prefix", "", "bus prefix of the pipeline (bus.prefix)")
	fs.StringVar(&f.dataDir, "data-dir", "", "review a stopped all-in-one (stormweir run) from its data directory (while it runs, set allinone.review_listen on it instead)")
	// --listen is the UI's address here; the stages' listeners, Redis and
	// the cluster are not a review's business.
	fs.Lookup("listen").Usage = "address the review UI listens on (default " + defaultReviewListen + ")"
	for _, name := range []string{"metrics-listen", "redis-addrs", "kubeconfig"} {
		_ = fs.MarkHidden(name)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		listen, _ := fs.GetString("listen")
		if listen == "" {
			listen = defaultReviewListen
		}
		cfg, err := f.load(cmd)
		if err != nil {
			return err
		}
		if f.cf.PrintConfig() {
			return cli.Print(cmd, cfg)
		}
		auth := cfg.Receiver.Auth
		if f.dataDir != "" && !auth.Disabled && !token.Configured(auth) {
			auth.TokenFile = filepath.Join(f.dataDir, "token")
		}
		var tokens *token.Set
		if !auth.Disabled {
			if !token.Configured(auth) {
				return cli.Usagef("receiver.auth: the review UI signs people in with the receiver's tokens: set receiver.auth.tokens or token_file (or receiver.auth.disabled=true to serve it without sign-in)")
			}
			if tokens, err = token.New(auth, clock.Real{}); err != nil {
				return cli.Usagef("receiver.auth: %v", err)
			}
		}
		return cli.Serve(cmd, "stormweir-review", cfg, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
			conn, closeConn, err := f.serveConn(cfg, log)
			if err != nil {
				return err
			}
			defer closeConn()
			ui, err := reviewui.New(reviewui.Options{JS: conn.JS, Config: cfg, Tokens: tokens, Log: log})
			if err != nil {
				return err
			}
			srv, err := service.NewServer(listen, ui, 5*time.Second)
			if err != nil {
				return err
			}
			log.Info("review UI", "url", "http://"+srv.Addr()+"/incidents", "sign_in", tokens != nil)
			return srv.Run(ctx)
		})
	}
	return cmd
}

// serveConn reaches the streams for a server: an embedded server on a data
// directory, or the configured NATS, waited for when it does not answer
// yet (the pages say it is unreachable meanwhile).
func (f *reviewFlags) serveConn(cfg config.Config, log *slog.Logger) (*bus.Conn, func(), error) {
	if f.dataDir != "" {
		if _, err := os.Stat(f.dataDir); err != nil {
			return nil, nil, fmt.Errorf("--data-dir: %w", err)
		}
		return f.connect(cfg)
	}
	conn, err := bus.Connect(cfg.Bus, "stormweir-review", log)
	if err != nil {
		return nil, nil, err
	}
	return conn, conn.NC.Close, nil
}
