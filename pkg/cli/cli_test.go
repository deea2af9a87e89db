package cli_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
)

func execute(t *testing.T, run cli.RunFunc, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Execute(cli.Stage("deduper", "dedup stage", "Longer words.", run), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustNotRun(t *testing.T) cli.RunFunc {
	return func(context.Context, config.Config, *slog.Logger) error {
		t.Error("the stage ran")
		return nil
	}
}

func TestStage_helpAndVersionExitZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"version"}, {"help"}} {
		code, out, errOut := execute(t, mustNotRun(t), args...)
		assert.Equal(t, cli.ExitOK, code, args)
		assert.Empty(t, errOut, args)
		assert.NotEmpty(t, out, args)
	}
	_, out, _ := execute(t, mustNotRun(t), "--help")
	assert.Contains(t, out, "dedup stage\n\nLonger words.")
	assert.Contains(t, out, "deduper [flags]")
	assert.Contains(t, out, "--print-config")
	assert.Contains(t, out, "--metrics-listen")
}

func TestStage_printConfigExitsZeroWithoutRunning(t *testing.T) {
	code, out, _ := execute(t, mustNotRun(t), "--print-config", "--nats-url", "nats://user:pw@nats:4222")
	require.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "url: nats://user:redacted@nats:4222\n")
	assert.Contains(t, out, "listen: :9090\n", "the stage binaries keep their defaults")
}

func TestStage_exitCodes(t *testing.T) {
	code, _, errOut := execute(t, mustNotRun(t), "--set", "dedup.window=soon")
	assert.Equal(t, cli.ExitUsage, code)
	assert.Contains(t, errOut, "deduper: ")
	assert.Contains(t, errOut, "dedup.window")
	assert.Contains(t, errOut, "Run 'deduper --help' for usage.\n")

	code, _, errOut = execute(t, mustNotRun(t), "--nope")
	assert.Equal(t, cli.ExitUsage, code)
	assert.Equal(t, "deduper: unknown flag: --nope\nRun 'deduper --help' for usage.\n", errOut)

	ran := false
	code, _, errOut = execute(t, func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		ran = true
		return nil
	}, "--set", "log.level=error")
	assert.True(t, ran)
	assert.Equal(t, cli.ExitOK, code, "a stage that stops cleanly: %s", errOut)

	code, out, errOut := execute(t, func(context.Context, config.Config, *slog.Logger) error {
		return errors.New("redis: connection refused")
	}, "--set", "log.level=error")
	assert.Equal(t, cli.ExitFailure, code)
	assert.Empty(t, out)
	assert.Empty(t, errOut, "the failure is logged once by Serve, not printed again")
}
