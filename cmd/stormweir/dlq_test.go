package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/cli"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// dlqEnv is a JetStream server with a pipeline's streams and entries its
// stages dead-lettered, and the flags that reach it.
type dlqEnv struct {
	t    *testing.T
	cfg  config.Bus
	js   jetstream.JetStream
	subj bus.Subjects
	pub  *bus.Publisher
	// flags reach the pipeline: --nats-url and its prefix.
	flags []string
}

func newDLQEnv(t *testing.T) *dlqEnv {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL).Bus
	conn, err := bus.Connect(cfg, "dlq-cmd-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(context.Background(), conn.JS, cfg))
	pub := bus.NewPublisher(conn.JS, cfg.PublishTimeout)
	t.Cleanup(pub.Close)
	return &dlqEnv{t: t, cfg: cfg, js: conn.JS, subj: bus.NewSubjects(cfg.Prefix), pub: pub,
		flags: []string{"--nats-url", n.URL, "--set", "bus.prefix=" + cfg.Prefix}}
}

// deadLetter stores a signal about pod (with or without a message id)
// and has the deduper give up on it.
func (e *dlqEnv) deadLetter(pod string, withID bool, cause error) {
	e.t.Helper()
	ctx := context.Background()
	sig := &signal.Signal{ID: "sig-" + pod, Fingerprint: "fp-" + pod, Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
		Status: signal.StatusFiring, Severity: signal.SeverityCritical, Namespace: "prod",
		Target: signal.Target{Kind: "Pod", Name: pod, Namespace: "prod"},
		Labels: map[string]string{"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": pod}}
	data, err := signal.Encode(sig)
	require.NoError(e.t, err)
	out := bus.Output{Subject: e.subj.Signals(sig.Source), Data: data, Header: nats.Header{bus.HeaderFingerprint: {sig.Fingerprint}}}
	if withID {
		out.MsgID = sig.ID
	}
	_, err = e.pub.Publish(ctx, out)
	require.NoError(e.t, err)
	stream := e.subj.StreamName(bus.StreamSignals)
	st, err := e.js.Stream(ctx, stream)
	require.NoError(e.t, err)
	raw, err := st.GetLastMsgForSubject(ctx, out.Subject)
	require.NoError(e.t, err)
	m := &bus.Msg{Subject: raw.Subject, Data: raw.Data, Header: raw.Header, Stream: stream, StreamSeq: raw.Sequence, Delivered: 60}
	h := bus.DeadLetter(e.pub, e.subj, "deduper", 60, slog.New(slog.DiscardHandler))(bus.HandlerFunc(func(context.Context, *bus.Msg) ([]bus.Output, error) {
		return nil, cause
	}))
	_, err = h.Handle(ctx, m)
	var dl *bus.DeadLettered
	require.ErrorAs(e.t, err, &dl)
}

// state is what a command could have written: the messages of each
// stream.
func (e *dlqEnv) state() map[string]uint64 {
	e.t.Helper()
	out := map[string]uint64{}
	for _, kind := range []string{bus.StreamSignals, bus.StreamIncidents, bus.StreamDLQ} {
		st, err := e.js.Stream(context.Background(), e.subj.StreamName(kind))
		require.NoError(e.t, err)
		info, err := st.Info(context.Background())
		require.NoError(e.t, err)
		out[kind] = info.State.Msgs
	}
	return out
}

func (e *dlqEnv) run(args ...string) (int, string, string) {
	e.t.Helper()
	return execute(e.t, append(args, e.flags...)...)
}

func TestDLQ_listAndShow(t *testing.T) {
	e := newDLQEnv(t)
	e.deadLetter("api-0", true, errors.New("redis down"))
	e.deadLetter("api-1", true, bus.Permanent(errors.New("invalid signal: no target")))

	code, out, errOut := e.run("dlq", "list")
	require.Equal(t, cli.ExitOK, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Regexp(t, `^SEQ +DEAD-LETTERED +STAGE +SUBJECT +INCIDENT +DELIVERIES +REASON$`, lines[0])
	assert.Regexp(t, `^1 +\S+Z +deduper +`+e.cfg.Prefix+`\.signals\.alertmanager +fp fp-api-0 +60 +gave up after 60 deliveries: redis down$`, lines[1])
	assert.Regexp(t, `^2 .* invalid signal: no target$`, lines[2])

	code, out, _ = e.run("dlq", "list", "--fingerprint", "fp-api-1", "-o", "json")
	require.Equal(t, cli.ExitOK, code)
	var v struct {
		Seq     uint64         `json:"seq"`
		MsgID   string         `json:"msgID"`
		Payload map[string]any `json:"payload"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	assert.EqualValues(t, 2, v.Seq)
	assert.Equal(t, "sig-api-1", v.MsgID)
	assert.Equal(t, "KubePodCrashLooping", v.Payload["name"])

	code, out, _ = e.run("dlq", "show", "1")
	require.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "entry 1, dead-lettered ")
	assert.Contains(t, out, "by the deduper after 60 deliveries\n")
	assert.Contains(t, out, "  reason:      gave up after 60 deliveries: redis down\n")
	assert.Contains(t, out, fmt.Sprintf("  original:    %s.signals.alertmanager, %s_SIGNALS #1, message id sig-api-0\n", e.cfg.Prefix, strings.ToUpper(e.cfg.Prefix)))
	assert.Contains(t, out, "    Stormweir-Fingerprint: fp-api-0\n")
	assert.Contains(t, out, `      "fingerprint": "fp-api-0",`)

	code, out, _ = e.run("dlq", "show", "--match", `pod="api-1"`, "-o", "yaml")
	require.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "---\nseq: 2\n")
}

func TestDLQ_retryIsWholeOrNothingAndOnce(t *testing.T) {
	e := newDLQEnv(t)
	e.deadLetter("api-0", false, errors.New("redis down"))
	e.deadLetter("api-1", true, bus.Permanent(errors.New("bad")))

	// api-1's id is still remembered by the signals stream: nothing is
	// retried, api-0 neither.
	before := e.state()
	code, out, errOut := e.run("dlq", "retry", "--all")
	assert.Equal(t, cli.ExitFailure, code)
	assert.Empty(t, out)
	assert.Regexp(t, `^stormweir dlq retry: DLQ entry 2: \S+_SIGNALS still remembers message id sig-api-1 for its 2m0s duplicate window; retry after \S+Z; nothing retried\n$`, errOut)
	assert.Equal(t, before, e.state(), "nothing written")

	code, out, errOut = e.run("dlq", "retry", "1", "--dry-run")
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Contains(t, out, "would retry 1 entry:\n")
	assert.Equal(t, before, e.state(), "a dry run writes nothing")

	code, out, errOut = e.run("dlq", "retry", "--fingerprint", "fp-api-0")
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Equal(t, fmt.Sprintf("entry 1: republished to %s.signals.alertmanager (%s_SIGNALS #3) for the deduper\nretried 1 entry\n",
		e.cfg.Prefix, strings.ToUpper(e.cfg.Prefix)), out)
	after := e.state()
	assert.Equal(t, before[bus.StreamSignals]+1, after[bus.StreamSignals])
	assert.Equal(t, before[bus.StreamDLQ]-1, after[bus.StreamDLQ])

	// Again: nothing matches any more, and nothing is written.
	code, out, errOut = e.run("dlq", "retry", "--fingerprint", "fp-api-0")
	assert.Equal(t, cli.ExitFailure, code)
	assert.Empty(t, out)
	assert.Equal(t, fmt.Sprintf("stormweir dlq retry: no entry of %s_DLQ matches\n", strings.ToUpper(e.cfg.Prefix)), errOut)
	code, _, errOut = e.run("dlq", "retry", "1")
	assert.Equal(t, cli.ExitFailure, code)
	assert.Contains(t, errOut, "no such DLQ entry 1 in ")
	assert.Equal(t, after, e.state())
}

func TestDLQ_purge(t *testing.T) {
	e := newDLQEnv(t)
	for _, pod := range []string{"a", "b", "c"} {
		e.deadLetter(pod, true, errors.New("x"))
	}
	code, out, errOut := e.run("dlq", "purge", "2")
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Equal(t, "purged 1 entry\n", out)
	assert.EqualValues(t, 2, e.state()[bus.StreamDLQ])

	code, out, errOut = e.run("dlq", "purge", "--all", "--dry-run")
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Contains(t, out, "would purge 2 entries:\n")
	code, out, errOut = e.run("dlq", "purge", "--all")
	require.Equal(t, cli.ExitOK, code, errOut)
	assert.Equal(t, "purged 2 entries\n", out)
	assert.Zero(t, e.state()[bus.StreamDLQ])

	code, out, errOut = e.run("dlq", "list")
	require.Equal(t, cli.ExitOK, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "no entry of ")
}

// TestDLQ_badInput: each mistake is one line on stderr, a non-zero exit,
// and no write.
func TestDLQ_badInput(t *testing.T) {
	e := newDLQEnv(t)
	e.deadLetter("api-0", false, errors.New("x"))
	before := e.state()
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"retry without a selection": {[]string{"dlq", "retry"}, cli.ExitUsage, "stormweir dlq retry: name the entries to retry: DLQ sequence numbers, a selection (--since, --until, --match, --incident, --fingerprint, --stage), or --all\n"},
		"purge without a selection": {[]string{"dlq", "purge"}, cli.ExitUsage, "stormweir dlq purge: name the entries to purge: "},
		"--all with a selection":    {[]string{"dlq", "purge", "--all", "--stage", "writer"}, cli.ExitUsage, "stormweir dlq purge: --all selects every entry: give it alone"},
		"not a sequence":            {[]string{"dlq", "retry", "x1"}, cli.ExitUsage, `stormweir dlq retry: argument "x1": not a DLQ sequence number`},
		"unknown stage":             {[]string{"dlq", "list", "--stage", "receiver"}, cli.ExitUsage, `stormweir dlq list: --stage "receiver": not a stage with a DLQ (deduper, aggregator or writer)`},
		"malformed matcher":         {[]string{"dlq", "retry", "--match", `alertname=~"(`}, cli.ExitUsage, `stormweir dlq retry: --match "alertname=~\"(": `},
		"empty range":               {[]string{"dlq", "purge", "--since", "1h", "--until", "2h"}, cli.ExitUsage, "stormweir dlq purge: empty range: --since "},
		"bad output":                {[]string{"dlq", "list", "-o", "xml"}, cli.ExitUsage, `stormweir dlq list: -o "xml": the output is table, json or yaml`},
		"no such entry":             {[]string{"dlq", "show", "9"}, cli.ExitFailure, "stormweir dlq show: no such DLQ entry 9 in "},
		"no match":                  {[]string{"dlq", "purge", "--incident", "rr-i00000000"}, cli.ExitFailure, "stormweir dlq purge: no entry of "},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := e.run(tc.args...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Empty(t, out)
			assert.True(t, strings.HasPrefix(errOut, tc.want), "stderr: %q", errOut)
			assert.Regexp(t, "^[^\n]+\n(Run '[^']+' for usage\\.\n)?$", errOut, "one line")
			assert.Equal(t, before, e.state(), "nothing written")
		})
	}

	t.Run("another pipeline", func(t *testing.T) {
		code, out, errOut := execute(t, "dlq", "retry", "--all", e.flags[0], e.flags[1], "--set", "bus.prefix=elsewhere")
		assert.Equal(t, cli.ExitFailure, code)
		assert.Empty(t, out)
		assert.Equal(t, "stormweir dlq retry: no stream ELSEWHERE_DLQ on the server: is bus.prefix \"elsewhere\" the pipeline's?\n", errOut)
		assert.Equal(t, before, e.state(), "nothing written")
	})
	t.Run("an unknown key", func(t *testing.T) {
		code, out, errOut := e.run("dlq", "list", "--set", "bus.prefx=x")
		assert.Equal(t, cli.ExitUsage, code)
		assert.Empty(t, out)
		assert.Contains(t, errOut, `unknown key "bus.prefx" (did you mean bus.prefix?)`)
	})
	t.Run("--print-config", func(t *testing.T) {
		code, out, errOut := e.run("dlq", "purge", "--all", "--print-config")
		assert.Equal(t, cli.ExitOK, code, errOut)
		assert.Contains(t, out, "prefix: "+e.cfg.Prefix)
		assert.Equal(t, before, e.state(), "printed, not run")
	})
	t.Run("no subcommand", func(t *testing.T) {
		code, out, errOut := execute(t, "dlq")
		assert.Equal(t, cli.ExitUsage, code)
		assert.Empty(t, out)
		assert.True(t, strings.HasPrefix(errOut, "stormweir dlq: a subcommand is required: list, show, retry or purge\n"), errOut)
	})
	t.Run("an unknown subcommand", func(t *testing.T) {
		code, out, errOut := execute(t, "dlq", "retyr")
		assert.Equal(t, cli.ExitUsage, code)
		assert.Empty(t, out)
		assert.True(t, strings.HasPrefix(errOut, `stormweir dlq: unknown command "retyr" (did you mean retry?)`), errOut)
	})

	t.Run("a NATS that does not answer", func(t *testing.T) {
		code, out, errOut := execute(t, "dlq", "list", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t)))
		assert.Equal(t, cli.ExitFailure, code)
		assert.Empty(t, out)
		assert.Regexp(t, `^stormweir dlq list: connecting to nats nats://127\.0\.0\.1:\d+: .+\n$`, errOut)
	})
}
