package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/review"
)

// reviewFlags are what replay and explain share: where the streams are
// (the pipeline configuration flags, a prefix, or a stopped all-in-one's
// data directory), which messages to read, and the progress bar.
type reviewFlags struct {
	cf       *cli.ConfigFlags
	sel      review.SelectorFlags
	prefix   string
	dataDir  string
	progress bool
}

func (f *reviewFlags) bind(cmd *cobra.Command) {
	f.cf = cli.AddConfig(cmd, nil)
	fs := cmd.Flags()
	f.sel.Bind(fs)
	fs.StringVar(&f.prefix, "prefix", "", "bus prefix of the pipeline (bus.prefix)")
	fs.StringVar(&f.dataDir, "data-dir", "", "read the streams of a stopped all-in-one (stormweir run) from its data directory (while it runs, set allinone.nats_listen and use --nats-url)")
	fs.BoolVar(&f.progress, "progress", true, "show a progress bar on stderr when it is a terminal")
	// A review runs no stage: the listeners, Redis and the cluster are
	// not its business.
	for _, name := range []string{"listen", "metrics-listen", "redis-addrs", "kubeconfig"} {
		_ = fs.MarkHidden(name)
	}
	if set := fs.Lookup("set"); set != nil {
		set.Usage = "a setting: bus.* and log.* say where and how to read; for replay any other key is a setting to try (a what-if), e.g. --set aggregator.rate_threshold=50 (repeatable)"
	}
}

// load builds the pipeline's configuration from the file, the
// environment and the flags, as the stages do.
func (f *reviewFlags) load(cmd *cobra.Command) (config.Config, error) {
	if f.prefix != "" {
		if err := cmd.Flags().Set("set", "bus.prefix="+f.prefix); err != nil {
			return config.Config{}, cli.Usage(err)
		}
	}
	return f.cf.Load()
}

// connect reaches the streams: an embedded server on a data directory, or
// the configured NATS, once (a NATS that does not answer is an error).
func (f *reviewFlags) connect(cfg config.Config) (*bus.Conn, func(), error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if f.dataDir != "" {
		srv, err := allinone.OpenStore(f.dataDir)
		if err != nil {
			return nil, nil, err
		}
		conn, err := bus.Dial(cfg.Bus, "stormweir-review", log, nats.InProcessServer(srv))
		if err != nil {
			srv.Shutdown()
			return nil, nil, err
		}
		return conn, func() { conn.NC.Close(); srv.Shutdown(); srv.WaitForShutdown() }, nil
	}
	conn, err := bus.Dial(cfg.Bus, "stormweir-review", log, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, err
	}
	return conn, conn.NC.Close, nil
}

// bar is a progress bar on stderr, or nothing when stderr is not a
// terminal.
type bar struct{ b *progressbar.ProgressBar }

func newBar(on bool) review.Progress {
	if !on || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &bar{b: progressbar.NewOptions64(0, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("reading"),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())}
}

func (b *bar) Add(total int64) { b.b.ChangeMax64(b.b.GetMax64() + total) }
func (b *bar) Done(n int64)    { _ = b.b.Add64(n) }

// newReplayCommand is `stormweir replay`: timelines of what a pipeline
// recorded, or a what-if.
func newReplayCommand() *cobra.Command {
	var (
		f      reviewFlags
		output string
		whatIf string
	)
	cmd := &cobra.Command{
		Use:   "replay [flags]",
		Short: "Print what a pipeline's streams recorded, as a timeline per incident",
		Long: `Read a pipeline's recorded streams and print a timeline per incident: each
signal received, each decision the stages recorded (new, duplicate,
resolved, reopened, storm member, storm opened/updated/closed, rejected,
dead-lettered, with the reason) and each RemediationRequest write. It only
reads: an ordered ephemeral consumer per stream, no durable consumer, no
Redis, no cluster.

With --what-if FILE (a YAML of settings) or --set key=value it re-runs the
deduper's and the aggregator's decisions on the selected signals with
those settings (the same code as the stages, in-memory stores, the
recorded receipt times) and reports which incidents and storms change.
Nothing is written anywhere.

With --into PREFIX it prints nothing of the kind: it re-publishes the
selected signals, as recorded, into the pipeline under that bus prefix (a
staging one; --to URL when it runs on another NATS), under message ids
scoped to the re-drive, at most --rate signals a second, so a fixed
version can be tried on last night's storm.` + cli.ConfigHelp(),
		Example: `  stormweir replay --since 2h --match 'alertname="KubePodCrashLooping",namespace=~"prod-.*"'
  stormweir replay --incident rr-i0123456789abcdef0123 -o yaml
  stormweir replay --match 'namespace="payments"' --set aggregator.rate_threshold=50
  stormweir replay --data-dir data -o json
  stormweir replay --since 12h --match 'namespace="batch"' --into staging --rate 200`,
		Args: cli.NoArgs,
	}
	f.bind(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", review.FormatTable, "output: table, json (one object a line) or yaml")
	cmd.Flags().StringVar(&whatIf, "what-if", "", "YAML file of settings to try, e.g. 'aggregator: {rate_threshold: 50}'")
	var into intoFlags
	into.bind(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := review.CheckFormat(output); err != nil {
			return cli.Usage(err)
		}
		sel, err := f.sel.Selector(time.Now())
		if err != nil {
			return cli.Usage(err)
		}
		// The settings tried: the file's, then --set's; the pipeline's
		// own (bus, log) only say where and how to read.
		sets, _ := cmd.Flags().GetStringArray("set")
		fromFile, err := settings(whatIf, nil)
		if err != nil {
			return cli.Usage(err)
		}
		for _, kv := range fromFile {
			if err := cmd.Flags().Set("set", kv); err != nil {
				return cli.Usage(err)
			}
		}
		fromFlags, _ := settings("", sets)
		tries := append(fromFile, fromFlags...)
		cfg, err := f.load(cmd)
		if err != nil {
			return err
		}
		if f.cf.PrintConfig() {
			return cli.Print(cmd, cfg)
		}
		if err := into.check(cfg.Bus, len(tries) > 0); err != nil {
			return err
		}
		ctx, stop := cli.SignalContext(cmd)
		defer stop()
		conn, closeConn, err := f.connect(cfg)
		if err != nil {
			return err
		}
		defer closeConn()
		if into.enabled() {
			return into.redriveSignals(ctx, cmd.OutOrStdout(), conn, cfg.Bus, sel)
		}
		if len(tries) > 0 {
			d, err := review.WhatIf(ctx, conn.JS, cfg.Bus.Prefix, sel, cfg, tries, newBar(f.progress))
			if err != nil {
				return err
			}
			if d.Incidents == 0 {
				return errors.New("no recorded incident in the selection")
			}
			return d.Write(cmd.OutOrStdout())
		}
		rep, err := review.Read(ctx, conn.JS, cfg.Bus.Prefix, sel, newBar(f.progress))
		if err != nil {
			return err
		}
		if len(rep.Timelines) == 0 {
			return emptyError(sel)
		}
		return review.Render(cmd.OutOrStdout(), rep.Timelines, output)
	}
	return cmd
}

// emptyError names what selected nothing.
func emptyError(sel review.Selector) error {
	switch {
	case sel.Incident != "":
		return fmt.Errorf("no incident, storm or request %s in the streams (it may be older than their retention)", sel.Incident)
	case sel.Fingerprint != "":
		return fmt.Errorf("no signal with fingerprint %s in the streams", sel.Fingerprint)
	}
	return errors.New("nothing recorded in the selected range")
}

// settings are the what-if's key=value pairs: the file's keys flattened,
// then --set's, without the keys that only say where and how to read
// (bus.*, log.*).
func settings(file string, sets []string) ([]string, error) {
	var out []string
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--what-if: %w", err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("--what-if %s: %w", file, err)
		}
		if len(doc) == 0 {
			return nil, fmt.Errorf("--what-if %s: no settings", file)
		}
		flatten("", doc, &out)
		sort.Strings(out)
	}
	for _, kv := range sets {
		if !strings.HasPrefix(kv, "bus.") && !strings.HasPrefix(kv, "log.") {
			out = append(out, kv)
		}
	}
	return out, nil
}

func flatten(prefix string, v any, out *[]string) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, x, out)
		}
	case []any:
		parts := make([]string, len(t))
		for i, x := range t {
			parts[i] = fmt.Sprint(x)
		}
		*out = append(*out, prefix+"="+strings.Join(parts, ","))
	default:
		*out = append(*out, fmt.Sprintf("%s=%v", prefix, t))
	}
}

// newExplainCommand is `stormweir explain`: one incident's story.
func newExplainCommand() *cobra.Command {
	var f reviewFlags
	cmd := &cobra.Command{
		Use:   "explain NAME|INCIDENT|FINGERPRINT|rejected|ignored [flags]",
		Short: "Tell one incident's story from what the stages recorded",
		Long: `Tell one incident's story in a few lines, from what the stages recorded on
the streams: what opened it, how often it repeated and flapped, whether it
was folded into a storm, the request written with its environment and
priority and the rules that chose them, the phase the remediation
controller set, or why it never became a request (rejected, resolved with
no incident, dead-lettered); and where in the streams the evidence lies.

"rejected" and "ignored" tell what became of the webhook items that never
were signals in the range: those the receiver refused (with the reason
its answer gave the sender) and those it took but ignored (Normal
Kubernetes events, Grafana contact point tests).` + cli.ConfigHelp(),
		Example: `  stormweir explain rr-i0123456789abcdef0123
  stormweir explain s586e7f179d5ebcf3c8dc9c89-7107bded0e91 --nats-url nats://127.0.0.1:4233
  stormweir explain 5a1f0c93d2b8e417... --since 1d
  stormweir explain ignored --since 2h`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef("name one RemediationRequest, incident, storm or fingerprint")
			}
			return nil
		},
	}
	f.bind(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		sel, err := f.sel.Selector(time.Now())
		if err != nil {
			return cli.Usage(err)
		}
		kind := ""
		switch ref := args[0]; {
		case ref == review.KindRejected || ref == review.KindIgnored:
			kind = ref
		case review.LooksLikeIncident(ref):
			sel.Incident = review.IncidentOf(ref)
		default:
			sel.Fingerprint = ref
		}
		cfg, err := f.load(cmd)
		if err != nil {
			return err
		}
		if f.cf.PrintConfig() {
			return cli.Print(cmd, cfg)
		}
		ctx, stop := cli.SignalContext(cmd)
		defer stop()
		conn, closeConn, err := f.connect(cfg)
		if err != nil {
			return err
		}
		defer closeConn()
		rep, err := review.Read(ctx, conn.JS, cfg.Bus.Prefix, sel, newBar(f.progress))
		if err != nil {
			return err
		}
		tls := rep.Timelines
		if kind != "" {
			tls = slices.DeleteFunc(tls, func(t *review.Timeline) bool { return t.Kind != kind })
			if len(tls) == 0 {
				return fmt.Errorf("no %s webhook items recorded in the selected range", kind)
			}
		}
		if len(tls) == 0 {
			return emptyError(sel)
		}
		return review.WriteExplanations(cmd.OutOrStdout(), tls)
	}
	return cmd
}
