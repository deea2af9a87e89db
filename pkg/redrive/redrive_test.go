package redrive_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/redrive"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// recorded is a signal as the receiver stored it on the source pipeline.
type recorded struct {
	subject string
	data    []byte
	header  nats.Header
	at      string
}

func signals(t testing.TB, prefix string, n int) []recorded {
	t.Helper()
	out := make([]recorded, n)
	for i := range n {
		pod := fmt.Sprintf("api-%d", i)
		sig := &signal.Signal{ID: "sig-" + pod, Fingerprint: "fp-" + pod, Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping",
			Status: signal.StatusFiring, Severity: signal.SeverityCritical, Namespace: "prod",
			Target:     signal.Target{Kind: "Pod", Name: pod, Namespace: "prod"},
			Labels:     map[string]string{"alertname": "KubePodCrashLooping", "namespace": "prod", "pod": pod},
			StartsAt:   time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC),
			ReceivedAt: time.Date(2026, 11, 29, 23, 0, 1, 0, time.UTC),
		}
		data, err := signal.Encode(sig)
		require.NoError(t, err)
		out[i] = recorded{
			subject: bus.NewSubjects(prefix).Signals(sig.Source), data: data,
			header: nats.Header{jetstream.MsgIDHeader: {sig.ID}, bus.HeaderFingerprint: {sig.Fingerprint}},
			at:     fmt.Sprintf("%s#%d", bus.NewSubjects(prefix).StreamName(bus.StreamSignals), i+1),
		}
	}
	return out
}

// staging runs a deduper and an aggregator (state in memory) on the
// pipeline of cfg until the test ends.
func staging(t *testing.T, cfg config.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "staging", app.Options{MemoryStores: true})
	require.NoError(t, err)
	stages, err := a.Build(ctx, app.Deduper, app.Aggregator)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, stages...) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		a.Close()
	})
}

func redriveAll(t *testing.T, js jetstream.JetStream, o redrive.Options, sigs []recorded) (stored, dups int) {
	t.Helper()
	ctx := context.Background()
	r, err := redrive.New(ctx, js, o)
	require.NoError(t, err)
	defer r.Close()
	for _, s := range sigs {
		require.NoError(t, r.Send(ctx, s.subject, s.data, s.header, s.at))
	}
	require.NoError(t, r.Flush(ctx))
	return r.Sent()
}

// TestRedriver_intoAStagingPipeline: recorded signals re-driven into a
// staging pipeline (another prefix on the same NATS) are its signals,
// under ids of the re-drive, and its stages decide on them: three new
// incidents. The same re-drive run again stores nothing; another re-drive
// of the same signals is new to the stream and counted as repeats.
func TestRedriver_intoAStagingPipeline(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL)
	conn, err := bus.Connect(cfg.Bus, "redrive-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)

	_, err = redrive.New(ctx, conn.JS, redrive.Options{Prefix: cfg.Bus.Prefix, ID: "r1"})
	require.EqualError(t, err, fmt.Sprintf("no pipeline under prefix %q there (stream %s is missing): start it first",
		cfg.Bus.Prefix, bus.NewSubjects(cfg.Bus.Prefix).StreamName(bus.StreamSignals)))

	require.NoError(t, bus.EnsureStreams(ctx, conn.JS, cfg.Bus))
	staging(t, cfg)
	subj := bus.NewSubjects(cfg.Bus.Prefix)
	sigs := signals(t, "prod", 3)

	stored, dups := redriveAll(t, conn.JS, redrive.Options{Prefix: cfg.Bus.Prefix, ID: "r1"}, sigs)
	assert.Equal(t, 3, stored)
	assert.Zero(t, dups)
	got := testenv.ReadArchived(t, conn.JS, subj.StreamName(bus.StreamSignals))
	require.Len(t, got, 3)
	for i, m := range got {
		assert.Equal(t, subj.Signals(signal.SourceAlertmanager), m.Subject)
		assert.Equal(t, sigs[i].data, m.Data, "the recorded bytes")
		assert.Equal(t, redrive.MsgID("r1", fmt.Sprintf("sig-api-%d", i)), m.Header.Get(jetstream.MsgIDHeader))
		assert.Equal(t, "r1", m.Header.Get(redrive.HeaderReplay))
		assert.Equal(t, sigs[i].at, m.Header.Get(redrive.HeaderReplayOf))
		assert.Equal(t, fmt.Sprintf("fp-api-%d", i), m.Header.Get(bus.HeaderFingerprint))
	}
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamSignals), app.Deduper, 10*time.Second)
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamIncidents), app.Aggregator, 10*time.Second, subj.AllDedup())
	assert.Len(t, testenv.ReadArchived(t, conn.JS, subj.StreamName(bus.StreamIncidents), subj.IncidentsOpen()), 3,
		"the staging pipeline opened an incident for each")

	stored, dups = redriveAll(t, conn.JS, redrive.Options{Prefix: cfg.Bus.Prefix, ID: "r1"}, sigs)
	assert.Zero(t, stored, "the same re-drive again stores nothing")
	assert.Equal(t, 3, dups)

	stored, _ = redriveAll(t, conn.JS, redrive.Options{Prefix: cfg.Bus.Prefix, ID: "r2", Rate: 1000}, sigs)
	assert.Equal(t, 3, stored, "another re-drive is new to the stream")
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamSignals), app.Deduper, 10*time.Second)
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamIncidents), app.Aggregator, 10*time.Second, subj.AllDedup())
	assert.Len(t, testenv.ReadArchived(t, conn.JS, subj.StreamName(bus.StreamIncidents), subj.IncidentsOpen()), 3,
		"repeats of open incidents open none")
	assert.Len(t, testenv.ReadArchived(t, conn.JS, subj.StreamName(bus.StreamIncidents), subj.IncidentsUpdate()), 3,
		"they count as occurrences")
}

func TestRedriver_refusesBadOptions(t *testing.T) {
	n := testenv.StartNATS(t)
	conn, err := bus.Connect(testenv.Config(n.URL).Bus, "redrive-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	for o, want := range map[redrive.Options]string{
		{Prefix: "", ID: "r"}:                  `--into "": not a bus prefix`,
		{Prefix: "a.>", ID: "r"}:               `--into "a.>": not a bus prefix`,
		{Prefix: "staging", ID: ""}:            `re-drive id "": must be one word`,
		{Prefix: "staging", ID: "r", Rate: -1}: "--rate -1: must be positive (or 0 for as fast as the target takes them)",
	} {
		_, err := redrive.New(context.Background(), conn.JS, o)
		assert.EqualError(t, err, want)
	}
}

// TestSelect_likeReplay: the signals a re-drive takes from a pipeline
// that ran, selected by time, labels, fingerprint and incident.
func TestSelect_likeReplay(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL)
	conn, err := bus.Connect(cfg.Bus, "redrive-test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(ctx, conn.JS, cfg.Bus))
	staging(t, cfg)
	subj := bus.NewSubjects(cfg.Bus.Prefix)

	sigs := signals(t, cfg.Bus.Prefix, 3)
	pub := bus.NewPublisher(conn.JS, time.Second)
	t.Cleanup(pub.Close)
	for _, s := range sigs {
		_, err := pub.Publish(ctx, bus.Output{Subject: s.subject, Data: s.data, MsgID: s.header.Get(jetstream.MsgIDHeader), Header: s.header})
		require.NoError(t, err)
	}
	testenv.WaitAcked(t, conn.JS, subj.StreamName(bus.StreamSignals), app.Deduper, 10*time.Second)
	opened := testenv.ReadArchived(t, conn.JS, subj.StreamName(bus.StreamIncidents), subj.DedupNew())
	require.Len(t, opened, 3)
	// The deduper decides a fetched batch concurrently, so its "new"
	// events need not come in the order the signals were published.
	var api1 string
	for _, m := range opened {
		if m.Header.Get(bus.HeaderFingerprint) == "fp-api-1" {
			api1 = m.Header.Get(bus.HeaderIncident)
		}
	}
	require.NotEmpty(t, api1)
	testenv.WaitArchived(t, conn.JS, cfg.Bus.Prefix)

	selected := func(sel review.Selector) ([]string, error) {
		var out []string
		err := redrive.Select(ctx, conn.JS, cfg.Bus.Prefix, sel, func(r *redrive.Recorded) error {
			out = append(out, r.Header.Get(bus.HeaderFingerprint))
			return nil
		})
		return out, err
	}
	pod1, err := review.ParseMatchers(`pod="api-1"`)
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		sel  review.Selector
		want []string
	}{
		"everything":    {review.Selector{}, []string{"fp-api-0", "fp-api-1", "fp-api-2"}},
		"labels":        {review.Selector{Matchers: pod1}, []string{"fp-api-1"}},
		"a fingerprint": {review.Selector{Fingerprint: "fp-api-2"}, []string{"fp-api-2"}},
		"an incident":   {review.Selector{Incident: api1}, []string{"fp-api-1"}},
	} {
		got, err := selected(tc.sel)
		require.NoError(t, err, name)
		assert.Equal(t, tc.want, got, name)
	}
	_, err = selected(review.Selector{Since: time.Now().Add(time.Hour)})
	assert.ErrorIs(t, err, redrive.ErrNothingSelected)
	_, err = selected(review.Selector{Incident: "i-unknown"})
	assert.EqualError(t, err, "no decision of incident or storm i-unknown is recorded in "+subj.StreamName(bus.StreamIncidentsArchive))
}

// BenchmarkRedriver_send re-drives recorded signals into a pipeline's
// stream on an in-process NATS, unthrottled (batches of 256 per wait).
func BenchmarkRedriver_send(b *testing.B) {
	ctx := context.Background()
	n := testenv.StartNATS(b)
	cfg := testenv.Config(n.URL)
	conn, err := bus.Connect(cfg.Bus, "redrive-bench", slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	b.Cleanup(conn.Close)
	require.NoError(b, bus.EnsureStreams(ctx, conn.JS, cfg.Bus))
	sigs := signals(b, "prod", 1024)
	r, err := redrive.New(ctx, conn.JS, redrive.Options{Prefix: cfg.Bus.Prefix, ID: redrive.NewID(time.Now())})
	require.NoError(b, err)
	b.Cleanup(r.Close)
	i := 0
	for b.Loop() {
		i++
		s := sigs[i%len(sigs)]
		h := nats.Header{jetstream.MsgIDHeader: {fmt.Sprintf("sig-%d", i)}, bus.HeaderFingerprint: s.header[bus.HeaderFingerprint]}
		if err := r.Send(ctx, s.subject, s.data, h, s.at); err != nil {
			b.Fatal(err)
		}
	}
	require.NoError(b, r.Flush(ctx))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
}
