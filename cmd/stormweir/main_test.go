package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
)

// execute runs stormweir with args in-process, as the shell would.
func execute(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.Execute(newRootCommand(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestStormweir_helpExitsZeroOnStdout(t *testing.T) {
	cases := map[string]struct {
		args []string
		want []string
	}{
		"root --help": {[]string{"--help"}, []string{"Usage:\n  stormweir [flags]\n  stormweir [command]", "run ", "loadgen ", "version ", "--print-config"}},
		"root -h":     {[]string{"-h"}, []string{"stormweir [command]"}},
		"help":        {[]string{"help"}, []string{"stormweir [command]"}},
		"run --help":  {[]string{"run", "--help"}, []string{"stormweir run [flags]", "--metrics-listen", "--print-config", "--set stringArray", "127.0.0.1:8080"}},
		"help run":    {[]string{"help", "run"}, []string{"stormweir run [flags]"}},
		"loadgen -h":  {[]string{"loadgen", "-h"}, []string{"stormweir loadgen [flags]", "--token-file", "--alerts int"}},
		"version -h":  {[]string{"version", "-h"}, []string{"--json"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := execute(t, tc.args...)
			assert.Equal(t, cli.ExitOK, code, "stderr: %s", errOut)
			assert.Empty(t, errOut)
			for _, w := range tc.want {
				assert.Contains(t, out, w)
			}
		})
	}
}

func TestStormweir_usageMistakesExitTwoWithOneLine(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"no command":       {nil, "stormweir: a command is required: "},
		"unknown command":  {[]string{"rnu"}, "stormweir: unknown command \"rnu\" (did you mean run?)\n"},
		"unknown flag":     {[]string{"run", "--bogus"}, "stormweir run: unknown flag: --bogus\n"},
		"argument":         {[]string{"run", "extra"}, "stormweir run: unexpected argument \"extra\" (this command takes flags only)\n"},
		"loadgen bad flag": {[]string{"loadgen", "--alerts", "many"}, "stormweir loadgen: invalid argument \"many\" for \"--alerts\" flag"},
		"missing token":    {[]string{"loadgen", "--token-file", "/nonexistent/token"}, "stormweir loadgen: --token-file: open /nonexistent/token: no such file or directory\n"},
		"version arg":      {[]string{"version", "x"}, "stormweir version: unexpected argument \"x\""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := execute(t, tc.args...)
			assert.Equal(t, cli.ExitUsage, code)
			assert.Empty(t, out)
			assert.True(t, strings.HasPrefix(errOut, tc.want), "stderr: %q", errOut)
			assert.Contains(t, errOut, "--help' for usage.\n")
		})
	}
}

func TestStormweir_configurationProblemsExitTwo(t *testing.T) {
	code, out, errOut := execute(t, "run", "--set", "dedup.windw=5m", "--print-config")
	assert.Equal(t, cli.ExitUsage, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, `unknown key "dedup.windw" (did you mean dedup.window?)`)
}

func TestStormweir_version(t *testing.T) {
	code, out, _ := execute(t, "version")
	require.Equal(t, cli.ExitOK, code)
	assert.Regexp(t, `^stormweir \S+ \(revision \S+, built \S+, go\S+\)\n$`, out)

	code, out, _ = execute(t, "version", "--json")
	require.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, `"goVersion":"go`)
}

// --print-config shows what `run` really runs with, at the root and on run
// alike: the embedded bus, the generated token file, the loopback listener.
func TestStormweir_printConfigShowsEffectiveRunSettings(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--print-config", "--set", "allinone.data_dir=" + dir},
		{"run", "--print-config", "--set", "allinone.data_dir=" + dir},
	} {
		code, out, errOut := execute(t, args...)
		require.Equal(t, cli.ExitOK, code, "stderr: %s", errOut)
		var cfg config.Config
		require.NoError(t, yaml.Unmarshal([]byte(out), &cfg), out)
		assert.Equal(t, "nats://in-process", cfg.Bus.URL, args)
		assert.Equal(t, dir+"/token", cfg.Receiver.Auth.TokenFile, args)
		assert.Equal(t, "127.0.0.1:8080", cfg.Receiver.Listen, args)
		assert.Empty(t, cfg.Worker.Listen, "metrics stay on the receiver's listener unless asked")
		assert.True(t, cfg.Bus.ManageStreams)
	}

	code, out, _ := execute(t, "run", "--print-config", "--set", "allinone.nats_listen=127.0.0.1:4223",
		"--metrics-listen", "127.0.0.1:9091", "--set", "receiver.auth.token_file=/etc/tokens", "--nats-url", "nats://elsewhere:4222")
	require.Equal(t, cli.ExitOK, code)
	var cfg config.Config
	require.NoError(t, yaml.Unmarshal([]byte(out), &cfg))
	assert.Equal(t, "nats://127.0.0.1:4223", cfg.Bus.URL, "the embedded server, not --nats-url")
	assert.Equal(t, "/etc/tokens", cfg.Receiver.Auth.TokenFile, "a configured token file is kept")
	assert.Equal(t, "127.0.0.1:9091", cfg.Worker.Listen)
}

func TestStormweir_loadgenPrintConfig(t *testing.T) {
	tok := t.TempDir() + "/token"
	require.NoError(t, writeFile(tok, "secret-token-0123456789\n"))
	code, out, errOut := execute(t, "loadgen", "--token-file", tok, "--alerts", "5", "--seed", "7", "--print-config")
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Contains(t, out, "alerts: 5\n")
	assert.Contains(t, out, "seed: 7\n")
	assert.Contains(t, out, "token: <redacted>\n")
	assert.NotContains(t, out, "secret-token")
	assert.Contains(t, out, "rate_threshold: 10\n", "the storm thresholds its expectation uses")

	code, out, _ = execute(t, "loadgen", "--print-config", "--set", "aggregator.rate_threshold=20")
	require.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "rate_threshold: 20\n")
}
