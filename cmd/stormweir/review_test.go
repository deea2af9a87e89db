package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/test/testenv"
)

// Every bad input is one line on stderr naming the problem (a command-line
// mistake adds where the help is, as every command does), a non-zero exit
// code, and nothing on stdout; nothing is written to the streams.
func TestReplay_badInputIsOneLine(t *testing.T) {
	nt := testenv.StartNATS(t)
	cfg := testenv.Config(nt.URL)
	nc, err := nats.Connect(nt.URL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, bus.EnsureStreams(ctx, js, cfg.Bus))
	// A stream under another prefix's name that stormweir did not make.
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER_SIGNALS_ARCHIVE", Subjects: []string{"other.>"}})
	require.NoError(t, err)
	free := testenv.FreePort(t)
	at := []string{"--nats-url", nt.URL, "--prefix", cfg.Bus.Prefix, "--progress=false"}

	for _, tc := range []struct {
		cmd   string
		args  []string
		usage bool // a command-line mistake: exit 2 and a pointer to the help
		want  string
	}{
		{"replay", append(at, "--match", `alertname=~"(`), true, `--match "alertname=~\"(": `},
		{"replay", append(at, "--since", "1h", "--until", "2h"), true, "empty range: --since"},
		{"replay", append(at, "--since", "last tuesday"), true, `--since "last tuesday": neither an RFC 3339 time`},
		{"replay", append(at, "-o", "xml"), true, `-o "xml": unknown output format (want table, json, yaml)`},
		{"replay", append(at, "--incident", "rr-i00000000000000000000"), false, "no incident, storm or request i00000000000000000000 in the streams"},
		{"replay", at, false, "nothing recorded in the selected range"},
		{"replay", []string{"--nats-url", nt.URL, "--prefix", "missing"}, false, "stream MISSING_SIGNALS_ARCHIVE: no such stream (is bus.prefix right, and has the pipeline run?)"},
		{"replay", []string{"--nats-url", nt.URL, "--prefix", "other"}, false, `stream OTHER_SIGNALS_ARCHIVE: not a stormweir stream (description "")`},
		{"replay", []string{"--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", free)}, false, fmt.Sprintf("connecting to nats nats://127.0.0.1:%d: nats: no servers available for connection", free)},
		{"replay", append(at, "--data-dir", t.TempDir()), false, "no stormweir run data in"},
		{"explain", append(at, "rr-s0123"), false, "no incident, storm or request s0123 in the streams"},
		{"explain", append(at, "abcdef0123456789"), false, "no signal with fingerprint abcdef0123456789 in the streams"},
		{"explain", at, true, "name one RemediationRequest, incident, storm or fingerprint"},
	} {
		t.Run(tc.cmd+" "+tc.want, func(t *testing.T) {
			code, stdout, stderr := execute(t, append([]string{tc.cmd}, tc.args...)...)
			assert.Empty(t, stdout)
			first, rest, _ := strings.Cut(stderr, "\n")
			assert.True(t, strings.HasPrefix(first, "stormweir "+tc.cmd+": "), stderr)
			assert.Contains(t, first, tc.want)
			if tc.usage {
				assert.Equal(t, cli.ExitUsage, code)
				assert.Equal(t, "Run 'stormweir "+tc.cmd+" --help' for usage.\n", rest)
			} else {
				assert.Equal(t, cli.ExitFailure, code)
				assert.Empty(t, rest, "one line")
			}
		})
	}

	// Nothing was written: the streams hold no message.
	for _, name := range bus.ReviewStreams(cfg.Bus.Prefix) {
		st, err := js.Stream(ctx, name)
		require.NoError(t, err)
		assert.Zero(t, st.CachedInfo().State.Msgs, name)
	}
}
