package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/dlq"
	"github.com/stormweir/stormweir/pkg/review"
)

// dlqStages are the stages that dead-letter (the receiver answers its
// sender instead).
var dlqStages = []string{"deduper", "aggregator", "writer"}

// newDLQCommand is `stormweir dlq`: the messages the stages gave up on.
func newDLQCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, retry and purge the messages the stages gave up on",
		Long: `A stage that gives up on a message (an error that can never succeed, or,
when bus.consumer.max_deliver sets a limit, a transient one through that
many deliveries) stores a copy with the reason
in the pipeline's DLQ stream (<PREFIX>_DLQ) before dropping it. These
commands read that stream on the NATS of bus.url under bus.prefix.

Entries are named by their DLQ sequence (the SEQ column of 'dlq list') or
selected like a replay: --since/--until, Alertmanager label matchers
(--match), --incident (an id or a RemediationRequest name), --fingerprint,
and --stage.

'retry' republishes each entry to its original subject with its original
headers and message id, so the stages, which key their work on that id,
complete it once and only once; the entry then leaves the DLQ and the
stage's stormweir_dlq_messages falls.`,
		Args: cli.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cli.Usagef("a subcommand is required: list, show, retry or purge")
		},
	}
	cmd.AddCommand(newDLQListCommand(), newDLQShowCommand(), newDLQRetryCommand(), newDLQPurgeCommand())
	return cmd
}

// dlqFlags are what every dlq subcommand shares: the pipeline's
// configuration (for bus.*) and the selection.
type dlqFlags struct {
	cf     *cli.ConfigFlags
	sel    review.SelectorFlags
	stages []string
	// all confirms a retry or purge of every entry.
	all bool
}

func (f *dlqFlags) bind(cmd *cobra.Command, confirmAll bool) {
	f.cf = cli.AddConfig(cmd, nil)
	// The DLQ commands run no stage: listeners, Redis and the cluster are
	// not their business.
	for _, name := range []string{"listen", "metrics-listen", "redis-addrs", "kubeconfig"} {
		_ = cmd.Flags().MarkHidden(name)
	}
	f.sel.Bind(cmd.Flags())
	cmd.Flags().StringSliceVar(&f.stages, "stage", nil, "only the DLQ of these stages: deduper, aggregator, writer (repeatable)")
	if confirmAll {
		cmd.Flags().BoolVar(&f.all, "all", false, "every entry (required when no entry is named or selected)")
	}
}

// filter builds the selection from the flags and the sequence numbers
// given as arguments; every problem is a usage error.
func (f *dlqFlags) filter(args []string) (dlq.Filter, error) {
	sel, err := f.sel.Selector(time.Now())
	if err != nil {
		return dlq.Filter{}, cli.Usage(err)
	}
	flt := dlq.Filter{Selector: sel}
	for _, s := range f.stages {
		if !slices.Contains(dlqStages, s) {
			return dlq.Filter{}, cli.Usagef("--stage %q: not a stage with a DLQ (deduper, aggregator or writer)", s)
		}
		flt.Stages = append(flt.Stages, s)
	}
	for _, a := range args {
		seq, err := strconv.ParseUint(a, 10, 64)
		if err != nil || seq == 0 {
			return dlq.Filter{}, cli.Usagef("argument %q: not a DLQ sequence number (the SEQ column of 'stormweir dlq list')", a)
		}
		flt.Seqs = append(flt.Seqs, seq)
	}
	if f.all && !flt.IsZero() {
		return dlq.Filter{}, cli.Usagef("--all selects every entry: give it alone, or drop it to keep the selection")
	}
	return flt, nil
}

// requireSelection refuses a retry or purge of the whole DLQ that --all
// did not confirm.
func (f *dlqFlags) requireSelection(verb string, flt dlq.Filter) error {
	if flt.IsZero() && !f.all {
		return cli.Usagef("name the entries to %s: DLQ sequence numbers, a selection (--since, --until, --match, --incident, --fingerprint, --stage), or --all", verb)
	}
	return nil
}

// errPrinted ends a command whose --print-config printed the
// configuration instead of running.
var errPrinted = errors.New("configuration printed")

// open loads the configuration and opens the pipeline's DLQ; the NATS is
// dialled once (one that does not answer is an error at once). A
// configuration problem is a usage error, the rest failures. With
// --print-config it prints the configuration and returns errPrinted.
func (f *dlqFlags) open(cmd *cobra.Command) (*dlq.Queue, func(), error) {
	cfg, err := f.cf.Load()
	if err != nil {
		return nil, nil, err
	}
	if f.cf.PrintConfig() {
		if err := cli.Print(cmd, cfg); err != nil {
			return nil, nil, err
		}
		return nil, nil, errPrinted
	}
	conn, err := bus.Dial(cfg.Bus, cfg.Bus.Prefix+"-dlq", slog.New(slog.DiscardHandler), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, err
	}
	q, err := dlq.Open(cmd.Context(), conn.JS, cfg.Bus.Prefix)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return q, conn.Close, nil
}

// collect reads the selected entries; none is an error naming the DLQ.
func collect(ctx context.Context, q *dlq.Queue, flt dlq.Filter) ([]*dlq.Entry, uint64, error) {
	var es []*dlq.Entry
	last, err := q.Scan(ctx, flt, func(e *dlq.Entry) error { es = append(es, e); return nil })
	if err != nil {
		return nil, 0, err
	}
	if len(es) == 0 {
		return nil, 0, fmt.Errorf("no entry of %s matches", q.Stream())
	}
	return es, last, nil
}

// selectToChange is the start retry and purge share: the selection
// (refused when it is the whole DLQ without --all), the opened DLQ and the
// selected entries. The caller closes the DLQ with the returned func.
func (f *dlqFlags) selectToChange(cmd *cobra.Command, args []string, verb string) (*dlq.Queue, []*dlq.Entry, uint64, func(), error) {
	flt, err := f.filter(args)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	if err := f.requireSelection(verb, flt); err != nil {
		return nil, nil, 0, nil, err
	}
	q, closeQ, err := f.open(cmd)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	es, last, err := collect(cmd.Context(), q, flt)
	if err != nil {
		closeQ()
		return nil, nil, 0, nil, err
	}
	return q, es, last, closeQ, nil
}

func newDLQListCommand() *cobra.Command {
	var f dlqFlags
	var output string
	cmd := &cobra.Command{
		Use:   "list [SEQ...] [flags]",
		Short: "List the dead-lettered messages: when, which stage, from where, why",
		Long: `List the entries of the DLQ, oldest first: the DLQ sequence, when and by
which stage the message was dead-lettered, its original subject, the
incident or fingerprint it was about, how often it was delivered, and the
reason. -o json prints one object a line (payload included), -o yaml one
document per entry.` + cli.ConfigHelp(),
		Example: `  stormweir dlq list
  stormweir dlq list --stage writer --since 2h
  stormweir dlq list --match 'alertname="KubePodCrashLooping"' -o json`,
	}
	f.bind(cmd, false)
	cmd.Flags().StringVarP(&output, "output", "o", dlq.FormatTable, "table, json (one object a line) or yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		flt, err := f.filter(args)
		if err != nil {
			return err
		}
		if err := dlq.CheckFormat(output); err != nil {
			return cli.Usage(err)
		}
		q, closeQ, err := f.open(cmd)
		if errors.Is(err, errPrinted) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closeQ()
		p := dlq.NewPrinter(cmd.OutOrStdout(), output)
		if _, err := q.Scan(cmd.Context(), flt, p.Summary); err != nil {
			return err
		}
		if p.Count() == 0 && output == dlq.FormatTable {
			fmt.Fprintf(cmd.ErrOrStderr(), "no entry of %s matches\n", q.Stream())
		}
		return p.Flush()
	}
	return cmd
}

func newDLQShowCommand() *cobra.Command {
	var f dlqFlags
	var output string
	cmd := &cobra.Command{
		Use:   "show SEQ... | --SELECTOR [flags]",
		Short: "Show dead-lettered messages in full: reason, origin, headers, payload",
		Long: `Show each selected entry in full: the reason, where the message was stored
and under which message id, its headers and its payload (JSON indented).` + cli.ConfigHelp(),
		Example: `  stormweir dlq show 42
  stormweir dlq show --incident rr-i3f9c2a -o yaml`,
	}
	f.bind(cmd, false)
	cmd.Flags().StringVarP(&output, "output", "o", dlq.FormatTable, "table (a block per entry), json (one object a line) or yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		flt, err := f.filter(args)
		if err != nil {
			return err
		}
		if err := dlq.CheckFormat(output); err != nil {
			return cli.Usage(err)
		}
		q, closeQ, err := f.open(cmd)
		if errors.Is(err, errPrinted) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closeQ()
		p := dlq.NewPrinter(cmd.OutOrStdout(), output)
		if _, err := q.Scan(cmd.Context(), flt, p.Detail); err != nil {
			return err
		}
		if p.Count() == 0 {
			return fmt.Errorf("no entry of %s matches", q.Stream())
		}
		return p.Flush()
	}
	return cmd
}

func newDLQRetryCommand() *cobra.Command {
	var f dlqFlags
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "retry SEQ... | --SELECTOR | --all [flags]",
		Short: "Republish dead-lettered messages to their stage, once and only once",
		Long: `Republish each selected entry to its original subject, with its original
headers and message id, then remove it from the DLQ. The stages key their
work on the message id, so a message that failed for a transient reason
(Redis or the API server away longer than the retries) completes once,
whatever the failed attempts did.

Every entry is checked before any is retried; if one cannot be, nothing
is. An entry whose original the stream still remembers (within the
stream's duplicate_window, e.g. a message dead-lettered at once for a
permanent error) cannot be retried yet: its republish would be dropped as
a duplicate, so the command names when it can. A retry that stopped
halfway is safe to run again.` + cli.ConfigHelp(),
		Example: `  stormweir dlq retry 42 43
  stormweir dlq retry --stage deduper --since 1h
  stormweir dlq retry --all --dry-run`,
	}
	f.bind(cmd, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be retried and retry nothing")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		q, es, _, closeQ, err := f.selectToChange(cmd, args, "retry")
		if errors.Is(err, errPrinted) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closeQ()
		ctx, out := cmd.Context(), cmd.OutOrStdout()
		now := time.Now()
		var refused []error
		for _, e := range es {
			if err := q.Check(ctx, e, now); err != nil {
				refused = append(refused, err)
			}
		}
		if len(refused) > 0 {
			more := ""
			if len(refused) > 1 {
				more = fmt.Sprintf(" (and %d more)", len(refused)-1)
			}
			return fmt.Errorf("%w%s; nothing retried", refused[0], more)
		}
		if dryRun {
			fmt.Fprintf(out, "would retry %d %s:\n", len(es), plural(len(es), "entry", "entries"))
			p := dlq.NewPrinter(out, dlq.FormatTable)
			for _, e := range es {
				_ = p.Summary(e)
			}
			return p.Flush()
		}
		for i, e := range es {
			res, err := q.Retry(ctx, e)
			if err != nil {
				return fmt.Errorf("%w; %d of %d entries retried before it", err, i, len(es))
			}
			switch res.Outcome {
			case dlq.AlreadyRetried:
				fmt.Fprintf(out, "entry %d: already republished to %s (%s #%d) by an earlier retry; removed\n", e.Seq, e.Subject, e.Stream, res.Seq)
			default:
				fmt.Fprintf(out, "entry %d: republished to %s (%s #%d) for the %s\n", e.Seq, e.Subject, e.Stream, res.Seq, e.Stage)
			}
		}
		fmt.Fprintf(out, "retried %d %s\n", len(es), plural(len(es), "entry", "entries"))
		return nil
	}
	return cmd
}

func newDLQPurgeCommand() *cobra.Command {
	var f dlqFlags
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "purge SEQ... | --SELECTOR | --all [flags]",
		Short: "Remove dead-lettered messages for good",
		Long: `Remove each selected entry from the DLQ without retrying it (the stage's
stormweir_dlq_messages falls). Entries dead-lettered while the command
runs are kept: only what was selected when it started is removed.` + cli.ConfigHelp(),
		Example: `  stormweir dlq purge 42
  stormweir dlq purge --stage writer --until 7d
  stormweir dlq purge --all`,
	}
	f.bind(cmd, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be purged and purge nothing")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		q, es, last, closeQ, err := f.selectToChange(cmd, args, "purge")
		if errors.Is(err, errPrinted) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closeQ()
		ctx, out := cmd.Context(), cmd.OutOrStdout()
		if dryRun {
			fmt.Fprintf(out, "would purge %d %s:\n", len(es), plural(len(es), "entry", "entries"))
			p := dlq.NewPrinter(out, dlq.FormatTable)
			for _, e := range es {
				_ = p.Summary(e)
			}
			return p.Flush()
		}
		if f.all {
			// One request per stage instead of one per entry.
			err = q.PurgeStages(ctx, nil, last)
		} else {
			for i, e := range es {
				if err = q.Delete(ctx, e); err != nil {
					err = fmt.Errorf("%w; %d of %d entries purged before it", err, i, len(es))
					break
				}
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "purged %d %s\n", len(es), plural(len(es), "entry", "entries"))
		return nil
	}
	return cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
