package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/stormweir/stormweir/pkg/version"
)

// Stage is the command line of a stage binary (receiver, deduper,
// aggregator, writer): the configuration flags, --print-config, a version
// subcommand, and run under Serve. short is its one-line description and
// long what its help says more.
func Stage(binary, short, long string, run RunFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:   binary + " [flags]",
		Short: short,
		Long:  short + "\n\n" + long + configHelp,
		Args:  NoArgs,
	}
	cf := AddConfig(cmd, nil)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.Load()
		if err != nil {
			return err
		}
		if cf.PrintConfig() {
			return Print(cmd, cfg)
		}
		return Serve(cmd, binary, cfg, run)
	}
	cmd.AddCommand(Version())
	return cmd
}

// configHelp ends the help of every command that reads the pipeline
// configuration.
const configHelp = `

Configuration, later wins: defaults, the YAML file (--config or
$STORMWEIR_CONFIG), STORMWEIR_* environment variables (STORMWEIR_BUS_URL
sets bus.url), then flags. The README lists every key.`

// ConfigHelp is the paragraph on configuration sources to end a Long
// description with, for commands that use AddConfig.
func ConfigHelp() string { return configHelp }

// Version is the `version` subcommand of every binary.
func Version() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, source revision, build date and Go version",
		Args:  NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(v)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), v)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the build as one JSON object")
	return cmd
}
