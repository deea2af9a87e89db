package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stormweir/stormweir/pkg/allinone"
	"github.com/stormweir/stormweir/pkg/cli"
)

// commands are stormweir's subcommands, in the order its help lists them.
// A new subcommand is one file with its constructor and one line here
// (pkg/cli says how to write it).
var commands = []func() *cobra.Command{
	newRunCommand,
	newLoadgenCommand,
	newReplayCommand,
	newExplainCommand,
	newReviewCommand,
	newDLQCommand,
	cli.Version,
}

// newRootCommand is `stormweir`: its subcommands, and --print-config,
// which at this level shows what `stormweir run` would run with.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "stormweir",
		Short: "Alerts in, one RemediationRequest per real incident out",
		Long: `stormweir receives Prometheus Alertmanager webhooks and Kubernetes Warning
events, deduplicates repeats, folds alert storms into one incident,
classifies environment and priority, and writes one RemediationRequest
custom resource per real incident.

Start with 'stormweir run': the whole pipeline in one process.

--print-config here shows the effective configuration of 'stormweir run'
(the same configuration flags apply).`,
		Args: cli.NoArgs,
	}
	cf := cli.AddConfig(root, allinone.Defaults)
	// The root takes the configuration flags only for --print-config; its
	// help lists the two that make sense there, the rest are run's.
	root.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "print-config" && f.Name != "config" {
			_ = root.Flags().MarkHidden(f.Name)
		}
	})
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if !cf.PrintConfig() {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			return cli.Usagef("a command is required: %s", strings.Join(names, ", "))
		}
		cfg, err := cf.Load()
		if err != nil {
			return err
		}
		return cli.Print(cmd, allinone.Effective(cfg))
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}
