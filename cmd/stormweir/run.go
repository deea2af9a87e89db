package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
)

// newRunCommand is `stormweir run`: every stage in one process.
func newRunCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [flags]",
		Short: "Run every stage in one process on an embedded JetStream server",
		Long: `Run the receiver, deduper, aggregator and writer in one process on an
embedded JetStream server (its store and a generated webhook token in the
data dir, ./data by default), with state in memory (--set
allinone.store=redis uses the redis section).

The receiver listens on 127.0.0.1:8080 (--listen to change it) and serves
/healthz, /readyz and /metrics there too; --metrics-listen adds a listener
for them alone. RemediationRequests are written to the cluster of the
current kubeconfig or, when no cluster answers, printed on stdout as YAML
(allinone.sink: auto, kubernetes or stdout).` + cli.ConfigHelp(),
		Example: `  stormweir run
  stormweir run --print-config
  stormweir run --set allinone.sink=stdout --log-level debug`,
		Args: cli.NoArgs,
	}
	cf := cli.AddConfig(cmd, allinone.Defaults)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.Load()
		if err != nil {
			return err
		}
		if cf.PrintConfig() {
			return cli.Print(cmd, allinone.Effective(cfg))
		}
		return cli.Serve(cmd, "stormweir", cfg, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
			return allinone.Run(ctx, cfg, log, allinone.Options{Out: cmd.OutOrStdout()})
		})
	}
	return cmd
}
