// Command stormweir is the one binary with every mode: `run` starts the
// whole pipeline in one process, `loadgen` drives a receiver with realistic
// Alertmanager load, `version` prints the build. The four stage binaries
// remain for distributed deployments. The command line conventions (help,
// exit codes, errors, --print-config) and how to add a subcommand are in
// pkg/cli; the subcommands are registered in root.go.
package main

import "github.com/stormweir/stormweir/pkg/cli"

func main() { cli.Main(newRootCommand()) }
