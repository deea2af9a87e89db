// Package cli holds what every stormweir command line shares, so the
// `stormweir` binary and the four stage binaries behave alike:
//
//   - commands are cobra commands; --help and -h print help on stdout and
//     exit 0;
//   - exit codes: 0 success (and help), 1 a failure while running,
//     2 a mistake on the command line or in the configuration;
//   - an error is one line on stderr, "<command path>: <what went wrong>",
//     followed for a usage mistake by where to find the usage;
//   - the pipeline configuration flags (--config, --set, --print-config and
//     the shortcuts of pkg/config) are added by AddConfig, and
//     --print-config prints the settings the command would really run with;
//   - a long-running command runs under Serve: a logger from the
//     configuration, a context that ends on SIGINT or SIGTERM, and one log
//     line when it stops.
//
// Adding a subcommand to `stormweir` takes one new file and one line: write
// cmd/stormweir/<name>.go with a func new<Name>Command() *cobra.Command
// (Args: cli.NoArgs or your own check returning cli.Usage errors; RunE
// returning cli.Usage(err) for a command-line mistake and a plain error for
// a failure; cli.AddConfig when it reads the pipeline configuration), then
// add new<Name>Command to the commands list in cmd/stormweir/root.go.
// cmd/stormweir/version.go is the smallest example, run.go one with the
// configuration and Serve.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	ossignal "os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/service"
)

// Exit codes of every stormweir binary.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// usageError marks a mistake on the command line or in the configuration:
// exit code 2, and a pointer to the command's help.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// Usage marks err as a command-line or configuration mistake (exit 2).
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// Usagef is Usage(fmt.Errorf(format, args...)).
func Usagef(format string, args ...any) error { return Usage(fmt.Errorf(format, args...)) }

// reportedError is a failure already logged by Serve: it exits 1 without
// a second line on stderr.
type reportedError struct{ err error }

func (r reportedError) Error() string { return r.err.Error() }
func (r reportedError) Unwrap() error { return r.err }

// NoArgs refuses positional arguments, naming an unknown subcommand as
// such (with cobra's suggestion when one is close).
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasSubCommands() {
		msg := fmt.Sprintf("unknown command %q", args[0])
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
		}
		return Usagef("%s", msg)
	}
	return Usagef("unexpected argument %q (this command takes flags only)", args[0])
}

// Execute runs root with args and returns the process's exit code. Errors
// are printed here, once, as one line on stderr.
func Execute(root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Usage(err) })
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	if rep := (reportedError{}); errors.As(err, &rep) {
		return ExitFailure
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
	if u := (usageError{}); errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return ExitUsage
	}
	return ExitFailure
}

// Main executes root with the process's arguments and exits with its code.
func Main(root *cobra.Command) {
	os.Exit(Execute(root, os.Args[1:], os.Stdout, os.Stderr))
}

// ConfigFlags are the pipeline configuration flags of one command.
type ConfigFlags struct {
	flags    *config.Flags
	defaults func() config.Config
}

// AddConfig adds the pipeline configuration flags to cmd. defaults are the
// command's defaults (config.Default when nil): `stormweir run` has its
// own, listening on 127.0.0.1 only.
func AddConfig(cmd *cobra.Command, defaults func() config.Config) *ConfigFlags {
	if defaults == nil {
		defaults = config.Default
	}
	return &ConfigFlags{flags: config.AddFlags(cmd.Flags()), defaults: defaults}
}

// Load returns the effective configuration; a problem is a Usage error
// listing every problem found.
func (c *ConfigFlags) Load() (config.Config, error) {
	cfg, err := c.flags.Load(c.defaults())
	if err != nil {
		return cfg, Usage(err)
	}
	return cfg, nil
}

// PrintConfig reports whether --print-config was given.
func (c *ConfigFlags) PrintConfig() bool { return c.flags.PrintConfig() }

// Print writes cfg as the command's effective configuration, secrets
// redacted, on cmd's standard output.
func Print(cmd *cobra.Command, cfg config.Config) error {
	return config.Print(cmd.OutOrStdout(), cfg)
}

// RunFunc is the body of a long-running command.
type RunFunc func(ctx context.Context, cfg config.Config, log *slog.Logger) error

// Serve runs run with the logger configured by cfg (named binary) and a
// context that ends on SIGINT or SIGTERM. It logs one line when run
// returns: "stopped" after a signal, or the error that stopped it (which
// Execute then does not print again, and exits 1).
func Serve(cmd *cobra.Command, binary string, cfg config.Config, run RunFunc) error {
	log := service.NewLogger(cfg.Log, binary)
	ctx, stop := SignalContext(cmd)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("stopped", "err", err)
		return reportedError{err}
	}
	log.Info("stopped")
	return nil
}

// SignalContext is cmd's context, ended by SIGINT or SIGTERM; call stop
// when done to restore the default signal handling.
func SignalContext(cmd *cobra.Command) (ctx context.Context, stop context.CancelFunc) {
	return ossignal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}
