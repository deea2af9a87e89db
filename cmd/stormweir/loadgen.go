package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
)

// newLoadgenCommand is `stormweir loadgen`: realistic Alertmanager load
// against a receiver, and a report.
func newLoadgenCommand() *cobra.Command {
	var (
		c         loadgen.Config
		tokenFile string
		seed      uint64
		asJSON    bool
		cf        *cli.ConfigFlags
	)
	cmd := &cobra.Command{
		Use:   "loadgen [flags]",
		Short: "Post Alertmanager webhooks to a receiver and report",
		Long: `Post realistic Alertmanager webhooks to a receiver: a share of repeats of
incidents already sent (--duplicates), optionally one storm (--storm), at a
given rate or as fast as the receiver answers. The report gives what was
accepted, the request latencies, and what the pipeline will make of it:
how many incidents stay individual requests and how many the storm
thresholds fold into storm requests. The thresholds are the pipeline's
configuration, read as 'stormweir run' reads it (--config, STORMWEIR_*,
--set aggregator.rate_threshold=20).`,
		Example: `  stormweir loadgen --token-file data/token --alerts 20000
  stormweir loadgen --token-file data/token --storm 0.5 --json`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Seed = seed
			if !cmd.Flags().Changed("seed") {
				c.Seed = uint64(time.Now().UnixNano())
			}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return cli.Usagef("--token-file: %w", err)
				}
				c.Token = strings.TrimSpace(string(b))
			}
			pipeline, err := cf.Load()
			if err != nil {
				return err
			}
			if cf.PrintConfig() {
				return printLoadgenConfig(cmd, c, tokenFile, pipeline.Aggregator)
			}
			return runLoadgen(cmd, c, asJSON, pipeline.Aggregator)
		},
	}
	// The pipeline's configuration, for its storm thresholds: only the
	// file and --set are meaningful here, so the other shortcuts stay out
	// of the help.
	cf = cli.AddConfig(cmd, allinone.Defaults)
	f := cmd.Flags()
	f.VisitAll(func(fl *pflag.Flag) {
		switch fl.Name {
		case "config", "set", "print-config":
		default:
			_ = f.MarkHidden(fl.Name)
		}
	})
	f.StringVar(&c.URL, "url", "http://127.0.0.1:8080/api/v1/signals/alertmanager", "receiver Alertmanager endpoint")
	f.StringVar(&c.Token, "token", os.Getenv("STORMWEIR_TOKEN"), "bearer token (default $STORMWEIR_TOKEN)")
	f.StringVar(&tokenFile, "token-file", "", "read the bearer token from this file")
	f.IntVar(&c.Alerts, "alerts", 10000, "alerts to send")
	f.IntVar(&c.BatchSize, "batch", 100, "alerts per webhook")
	f.Float64Var(&c.Rate, "rate", 0, "alerts per second (0: as fast as the receiver answers)")
	f.IntVar(&c.Concurrency, "concurrency", 8, "requests in flight")
	f.Float64Var(&c.DuplicateRatio, "duplicates", 0.7, "share of alerts repeating an incident already sent")
	f.Float64Var(&c.StormRatio, "storm", 0.0, "share of new incidents belonging to one storm")
	f.Uint64Var(&seed, "seed", 0, "random seed, for a repeatable load (default: from the clock)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	// The token on the command line is visible to every user of the
	// machine; the flag stays for scripts but the help steers to the file.
	_ = f.MarkHidden("token")
	return cmd
}

// printLoadgenConfig prints loadgen's effective settings and the storm
// thresholds its expectation uses.
func printLoadgenConfig(cmd *cobra.Command, c loadgen.Config, tokenFile string, agg config.Aggregator) error {
	token := ""
	if c.Token != "" {
		token = "<redacted>"
	}
	b, err := yaml.Marshal(map[string]any{
		"url": c.URL, "token": token, "token_file": tokenFile, "alerts": c.Alerts,
		"batch": c.BatchSize, "rate": c.Rate, "concurrency": c.Concurrency,
		"duplicates": c.DuplicateRatio, "storm": c.StormRatio, "seed": c.Seed,
		"aggregator": agg,
	})
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(b)
	return err
}

// runLoadgen sends the load and prints the report.
func runLoadgen(cmd *cobra.Command, c loadgen.Config, asJSON bool, agg config.Aggregator) error {
	ctx, stop := cli.SignalContext(cmd)
	defer stop()
	out := cmd.OutOrStdout()
	rep, err := loadgen.Run(ctx, c, cmd.ErrOrStderr())
	if asJSON {
		_ = json.NewEncoder(out).Encode(struct {
			loadgen.Report
			Outcome loadgen.Outcome `json:"outcome"`
		}{rep, rep.Expected.Outcome(agg)})
	} else {
		fmt.Fprintf(out, "requests %d, alerts %d: accepted %d (%d duplicates absorbed), rejected %d, errors %d\n",
			rep.Requests, rep.Alerts, rep.Accepted, rep.Duplicates, rep.Rejected, rep.Errors)
		fmt.Fprintf(out, "%.0f alerts/s accepted over %s; request latency p50 %s, p99 %s, max %s\n",
			rep.AcceptedPerSec, rep.Elapsed.Round(time.Millisecond), rep.P50, rep.P99, rep.Max)
		fmt.Fprintln(out, rep.Expected.Summary(agg))
	}
	if err != nil {
		return err
	}
	if rep.Errors > 0 {
		return fmt.Errorf("%d requests failed", rep.Errors)
	}
	return nil
}
