package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/redrive"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// TestReplay_intoAnotherPipeline: `replay --into` re-publishes the
// selected recorded signals into a staging pipeline on the same NATS
// under ids of the re-drive; the same re-drive again stores nothing; bad
// input is one line, a non-zero exit and no write.
func TestReplay_intoAnotherPipeline(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	src := testenv.Config(n.URL).Bus
	dst := src
	dst.Prefix = src.Prefix + "-staging"
	conn, err := bus.Connect(src, "redrive-cmd-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	for _, b := range []config.Bus{src, dst} {
		require.NoError(t, bus.EnsureStreams(ctx, conn.JS, b))
	}
	pub := bus.NewPublisher(conn.JS, src.PublishTimeout)
	t.Cleanup(pub.Close)
	for _, pod := range []string{"api-0", "api-1", "web-0"} {
		sig := &signal.Signal{ID: "sig-" + pod, Fingerprint: "fp-" + pod, Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
			Status: signal.StatusFiring, Severity: signal.SeverityCritical, Namespace: "prod",
			Target: signal.Target{Kind: "Pod", Name: pod, Namespace: "prod"},
			Labels: map[string]string{"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": pod}}
		data, err := signal.Encode(sig)
		require.NoError(t, err)
		_, err = pub.Publish(ctx, bus.Output{Subject: bus.NewSubjects(src.Prefix).Signals(sig.Source), Data: data, MsgID: sig.ID,
			Header: nats.Header{bus.HeaderFingerprint: {sig.Fingerprint}}})
		require.NoError(t, err)
	}
	testenv.WaitArchived(t, conn.JS, src.Prefix)
	target := bus.NewSubjects(dst.Prefix).StreamName(bus.StreamSignals)
	stored := func() uint64 {
		st, err := conn.JS.Stream(ctx, target)
		require.NoError(t, err)
		info, err := st.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	from := []string{"--nats-url", n.URL, "--prefix", src.Prefix}

	code, out, errOut := execute(t, append([]string{"replay", "--match", `pod=~"api-.*"`, "--into", dst.Prefix, "--rate", "500"}, from...)...)
	require.Equal(t, cli.ExitOK, code, errOut)
	m := regexp.MustCompile(`^re-drove 2 signals into "` + regexp.QuoteMeta(dst.Prefix) + `" as re-drive (\S+): 2 stored, 0 already there\n$`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	id := m[1]
	got := testenv.ReadStream(t, conn.JS, target)
	require.Len(t, got, 2)
	assert.Equal(t, redrive.MsgID(id, "sig-api-0"), got[0].Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, dst.Prefix+".signals.alertmanager", got[1].Subject)

	code, out, errOut = execute(t, append([]string{"replay", "--match", `pod=~"api-.*"`, "--into", dst.Prefix, "--replay-id", id}, from...)...)
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Equal(t, fmt.Sprintf("re-drove 2 signals into %q as re-drive %s: 0 stored, 2 already there\n", dst.Prefix, id), out)
	assert.EqualValues(t, 2, stored())

	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"into itself":      {[]string{"--into", src.Prefix}, cli.ExitUsage, fmt.Sprintf("stormweir replay: --into %q is the pipeline replayed: re-drive into another prefix, or another NATS with --to\n", src.Prefix)},
		"rate alone":       {[]string{"--rate", "10"}, cli.ExitUsage, "stormweir replay: --to, --rate and --replay-id go with --into PREFIX\n"},
		"negative rate":    {[]string{"--into", dst.Prefix, "--rate", "-1"}, cli.ExitUsage, "stormweir replay: --rate -1: must be positive"},
		"with a what-if":   {[]string{"--into", dst.Prefix, "--set", "aggregator.rate_threshold=5"}, cli.ExitUsage, "stormweir replay: --into re-drives the recorded signals; it does not go with a what-if\n"},
		"no such pipeline": {[]string{"--into", "nowhere"}, cli.ExitFailure, `stormweir replay: no pipeline under prefix "nowhere" there (stream NOWHERE_SIGNALS is missing): start it first` + "\n"},
		"nothing selected": {[]string{"--into", dst.Prefix, "--fingerprint", "fp-none"}, cli.ExitFailure, "stormweir replay: no recorded signal matches the selection\n"},
		"--to not there":   {[]string{"--into", dst.Prefix, "--to", fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t))}, cli.ExitFailure, "stormweir replay: --to: connecting to nats nats://127.0.0.1:"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := execute(t, append(append([]string{"replay"}, tc.args...), from...)...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Empty(t, out)
			assert.True(t, strings.HasPrefix(errOut, tc.want), "stderr: %q", errOut)
			assert.Regexp(t, "^[^\n]+\n(Run '[^']+' for usage\\.\n)?$", errOut, "one line")
			assert.EqualValues(t, 2, stored(), "nothing written")
		})
	}
}
