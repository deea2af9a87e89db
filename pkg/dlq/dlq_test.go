package dlq_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/dlq"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// env is a JetStream server with a pipeline's streams, and messages
// dead-lettered into its DLQ by the stages' own DeadLetter middleware.
type env struct {
	t    testing.TB
	cfg  config.Bus
	js   jetstream.JetStream
	subj bus.Subjects
	pub  *bus.Publisher
}

func newEnv(t testing.TB) *env {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL).Bus
	conn, err := bus.Connect(cfg, "dlq-test", quiet())
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(context.Background(), conn.JS, cfg))
	pub := bus.NewPublisher(conn.JS, cfg.PublishTimeout)
	t.Cleanup(pub.Close)
	return &env{t: t, cfg: cfg, js: conn.JS, subj: bus.NewSubjects(cfg.Prefix), pub: pub}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// alert is a firing signal of alertname name about pod in ns.
func alert(id, name, ns, pod string) *signal.Signal {
	return &signal.Signal{
		ID: id, Fingerprint: "fp-" + pod, Source: signal.SourceAlertmanager, Name: name,
		Status: signal.StatusFiring, Severity: signal.SeverityCritical, Namespace: ns,
		Target: signal.Target{Kind: "Pod", Name: pod, Namespace: ns},
		Labels: map[string]string{"alertname": name, "namespace": ns, "pod": pod},
	}
}

// store publishes out and returns it as its stage receives it.
func (e *env) store(out bus.Output) *bus.Msg {
	e.t.Helper()
	ctx := context.Background()
	_, err := e.pub.Publish(ctx, out)
	require.NoError(e.t, err)
	stream := e.subj.StreamName(bus.StreamSignals)
	if out.Subject != e.subj.Signals(signal.SourceAlertmanager) {
		stream = e.subj.StreamName(bus.StreamIncidents)
	}
	st, err := e.js.Stream(ctx, stream)
	require.NoError(e.t, err)
	raw, err := st.GetLastMsgForSubject(ctx, out.Subject)
	require.NoError(e.t, err)
	return &bus.Msg{Subject: raw.Subject, Data: raw.Data, Header: raw.Header, Stream: stream, StreamSeq: raw.Sequence, Delivered: 3, Timestamp: raw.Time}
}

// signalMsg stores sig as the receiver does; without an id the message
// carries no Nats-Msg-Id.
func (e *env) signalMsg(sig *signal.Signal, withID bool) *bus.Msg {
	e.t.Helper()
	data, err := signal.Encode(sig)
	require.NoError(e.t, err)
	h := nats.Header{}
	h.Set(bus.HeaderFingerprint, sig.Fingerprint)
	h.Set(bus.HeaderSource, string(sig.Source))
	out := bus.Output{Subject: e.subj.Signals(sig.Source), Data: data, Header: h}
	if withID {
		out.MsgID = sig.ID
	}
	return e.store(out)
}

// eventMsg stores a new-incident event for sig as the deduper does.
func (e *env) eventMsg(sig *signal.Signal, incidentID string) *bus.Msg {
	e.t.Helper()
	raw, err := signal.Encode(sig)
	require.NoError(e.t, err)
	data, err := incident.Marshal(&incident.Event{Decision: incident.DecisionNew, IncidentID: incidentID, Fingerprint: sig.Fingerprint, Revision: 1, Signal: raw})
	require.NoError(e.t, err)
	h := nats.Header{}
	h.Set(bus.HeaderIncident, incidentID)
	return e.store(bus.Output{Subject: e.subj.DedupNew(), Data: data, MsgID: "d:" + sig.ID, Header: h})
}

// deadLetter has stage give up on m, through the stages' middleware.
func (e *env) deadLetter(stage string, m *bus.Msg, err error) {
	e.t.Helper()
	h := bus.DeadLetter(e.pub, e.subj, stage, 3, quiet())(bus.HandlerFunc(func(context.Context, *bus.Msg) ([]bus.Output, error) {
		return nil, err
	}))
	_, got := h.Handle(context.Background(), m)
	var dl *bus.DeadLettered
	require.ErrorAs(e.t, got, &dl)
}

func (e *env) queue() *dlq.Queue {
	e.t.Helper()
	q, err := dlq.Open(context.Background(), e.js, e.cfg.Prefix)
	require.NoError(e.t, err)
	return q
}

func scan(t testing.TB, q *dlq.Queue, f dlq.Filter) []*dlq.Entry {
	t.Helper()
	var out []*dlq.Entry
	_, err := q.Scan(context.Background(), f, func(e *dlq.Entry) error { out = append(out, e); return nil })
	require.NoError(t, err)
	return out
}

func seqs(es []*dlq.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// stored counts the messages of stream on subject.
func (e *env) stored(stream, subject string) uint64 {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), e.subj.StreamName(stream))
	require.NoError(e.t, err)
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	require.NoError(e.t, err)
	return info.State.Subjects[subject]
}

func TestQueue_entriesSayWhatFailedWhereAndWhy(t *testing.T) {
	e := newEnv(t)
	crash := alert("sig-1", "KubePodCrashLooping", "prod-eu", "api-0")
	orig := e.signalMsg(crash, true)
	e.deadLetter("deduper", orig, errors.New("redis down"))
	e.deadLetter("aggregator", e.eventMsg(alert("sig-2", "KubePodNotReady", "qa", "web-0"), "i-web"), bus.Permanent(errors.New("bad scope")))

	es := scan(t, e.queue(), dlq.Filter{})
	require.Len(t, es, 2)
	got := es[0]
	assert.Equal(t, "deduper", got.Stage)
	assert.Equal(t, "gave up after 3 deliveries: redis down", got.Reason)
	assert.Equal(t, e.subj.Signals(signal.SourceAlertmanager), got.Subject)
	assert.Equal(t, e.subj.StreamName(bus.StreamSignals), got.Stream)
	assert.Equal(t, orig.StreamSeq, got.StreamSeq)
	assert.EqualValues(t, 3, got.Deliveries)
	assert.Equal(t, "sig-1", got.MsgID)
	assert.Equal(t, "fp-api-0", got.Fingerprint)
	assert.Equal(t, orig.Data, got.Data)
	assert.Equal(t, nats.Header{bus.HeaderFingerprint: {"fp-api-0"}, bus.HeaderSource: {"alertmanager"}}, got.Header,
		"the original headers, without the DLQ's own")
	sig, err := got.Signal()
	require.NoError(t, err)
	assert.Equal(t, "api-0", sig.Target.Name)

	ev := es[1]
	assert.Equal(t, "aggregator", ev.Stage)
	assert.Equal(t, "bad scope", ev.Reason)
	assert.Equal(t, "i-web", ev.Incident)
	assert.Equal(t, "fp-web-0", ev.Fingerprint, "read from the event when the headers lack it")
	sig, err = ev.Signal()
	require.NoError(t, err, "the signal an event carries")
	assert.Equal(t, "web-0", sig.Target.Name)
}

func TestQueue_filterSelectsLikeReplay(t *testing.T) {
	e := newEnv(t)
	e.deadLetter("deduper", e.signalMsg(alert("s1", "KubePodCrashLooping", "prod-eu", "api-0"), true), errors.New("x"))
	e.deadLetter("deduper", e.signalMsg(alert("s2", "KubePodCrashLooping", "qa", "api-1"), true), errors.New("x"))
	e.deadLetter("writer", e.eventMsg(alert("s3", "KubePodNotReady", "prod-us", "web-0"), "i-web"), errors.New("x"))
	q := e.queue()
	all := scan(t, q, dlq.Filter{})
	require.Len(t, all, 3)
	prod, err := review.ParseMatchers(`namespace=~"prod-.*"`)
	require.NoError(t, err)
	crash, err := review.ParseMatchers(`alertname="KubePodCrashLooping"`)
	require.NoError(t, err)

	for name, tc := range map[string]struct {
		f    dlq.Filter
		want []uint64
	}{
		"everything":             {dlq.Filter{}, seqs(all)},
		"a stage":                {dlq.Filter{Stages: []string{"writer"}}, seqs(all[2:])},
		"by sequence":            {dlq.Filter{Seqs: []uint64{all[1].Seq}}, seqs(all[1:2])},
		"matchers":               {dlq.Filter{Selector: review.Selector{Matchers: prod}}, []uint64{all[0].Seq, all[2].Seq}},
		"all matchers":           {dlq.Filter{Selector: review.Selector{Matchers: append(prod, crash...)}}, seqs(all[:1])},
		"an incident":            {dlq.Filter{Selector: review.Selector{Incident: "i-web"}}, seqs(all[2:])},
		"a fingerprint":          {dlq.Filter{Selector: review.Selector{Fingerprint: "fp-api-1"}}, seqs(all[1:2])},
		"since the last":         {dlq.Filter{Selector: review.Selector{Since: all[2].Time}}, seqs(all[2:])},
		"until the second":       {dlq.Filter{Selector: review.Selector{Until: all[1].Time}}, seqs(all[:1])},
		"stage and matchers":     {dlq.Filter{Stages: []string{"deduper"}, Selector: review.Selector{Matchers: prod}}, seqs(all[:1])},
		"nothing matches":        {dlq.Filter{Stages: []string{"receiver"}}, nil},
		"sequence, other fp":     {dlq.Filter{Seqs: []uint64{all[0].Seq}, Selector: review.Selector{Fingerprint: "fp-web-0"}}, nil},
		"incident, other labels": {dlq.Filter{Selector: review.Selector{Matchers: labels.Matchers{crash[0]}, Incident: "i-web"}}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			got := seqs(scan(t, q, tc.f))
			if len(tc.want) == 0 {
				assert.Empty(t, got)
				return
			}
			assert.Equal(t, tc.want, got)
		})
	}

	_, err = q.Get(context.Background(), all[2].Seq+10)
	assert.ErrorIs(t, err, dlq.ErrNoEntry)
	_, err = q.Scan(context.Background(), dlq.Filter{Seqs: []uint64{all[2].Seq + 10}}, func(*dlq.Entry) error { return nil })
	assert.ErrorIs(t, err, dlq.ErrNoEntry, "a sequence named is one that exists")
}

// TestQueue_retryRepublishesOnceUnderTheOriginalID: a retry stores the
// original payload and headers on the original subject under the
// original message id, and removes the entry; a retry interrupted before
// the removal is recognised when run again and stores nothing more; a
// retry while the stream still remembers the original id is refused
// without a write.
func TestQueue_retryRepublishesOnceUnderTheOriginalID(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	subject := e.subj.Signals(signal.SourceAlertmanager)

	// A message stored without an id: the stage knew it by its position.
	noID := e.signalMsg(alert("s1", "KubePodCrashLooping", "prod-eu", "api-0"), false)
	e.deadLetter("deduper", noID, errors.New("redis down"))
	q := e.queue()
	es := scan(t, q, dlq.Filter{})
	require.Len(t, es, 1)
	entry := es[0]
	require.Equal(t, noID.MsgID(), entry.MsgID)
	require.NoError(t, q.Check(ctx, entry, time.Now()), "an id the stream never stored is not remembered")

	res, err := q.Retry(ctx, entry)
	require.NoError(t, err)
	assert.Equal(t, dlq.Retried, res.Outcome)
	assert.Greater(t, res.Seq, noID.StreamSeq)
	st, err := e.js.Stream(ctx, e.subj.StreamName(bus.StreamSignals))
	require.NoError(t, err)
	again, err := st.GetMsg(ctx, res.Seq)
	require.NoError(t, err)
	assert.Equal(t, subject, again.Subject)
	assert.Equal(t, noID.Data, again.Data)
	assert.Equal(t, noID.MsgID(), again.Header.Get(jetstream.MsgIDHeader), "the id the stage keyed its work on")
	assert.Equal(t, "fp-api-0", again.Header.Get(bus.HeaderFingerprint))
	assert.Empty(t, again.Header.Get(bus.HeaderDLQReason), "no DLQ header goes back to the stage")
	assert.Empty(t, scan(t, q, dlq.Filter{}), "the entry is gone")
	assert.EqualValues(t, 2, e.stored(bus.StreamSignals, subject))

	// Run again with the entry it had read (stopped before removing it):
	// the stream recognises the id, nothing is stored twice.
	res, err = q.Retry(ctx, entry)
	require.NoError(t, err)
	assert.Equal(t, dlq.AlreadyRetried, res.Outcome)
	assert.Equal(t, again.Sequence, res.Seq)
	assert.EqualValues(t, 2, e.stored(bus.StreamSignals, subject))

	// A message whose own id the stream still remembers (dead-lettered at
	// once, as for a permanent error): its republish would be dropped, so
	// it is refused and nothing changes.
	withID := e.signalMsg(alert("s2", "KubePodCrashLooping", "prod-eu", "api-1"), true)
	e.deadLetter("deduper", withID, bus.Permanent(errors.New("bad")))
	es = scan(t, q, dlq.Filter{})
	require.Len(t, es, 1)
	var rem *dlq.RememberedError
	require.ErrorAs(t, q.Check(ctx, es[0], time.Now()), &rem, "checked before any write")
	until := withID.Timestamp.Add(e.cfg.Signals.DuplicateWindow)
	assert.WithinDuration(t, until, rem.Until, time.Millisecond)
	assert.NoError(t, q.Check(ctx, es[0], until.Add(time.Millisecond)), "once the window is over")
	_, err = q.Retry(ctx, es[0])
	require.ErrorAs(t, err, &rem)
	assert.Equal(t, "s2", rem.MsgID)
	assert.Equal(t, e.cfg.Signals.DuplicateWindow, rem.Window)
	assert.WithinDuration(t, until, rem.Until, time.Millisecond)
	assert.Contains(t, err.Error(), "duplicate window; retry after")
	assert.EqualValues(t, 3, e.stored(bus.StreamSignals, subject))
	assert.Len(t, scan(t, q, dlq.Filter{}), 1, "the entry stays")

	// Once the window is over (shortened here), the same retry works.
	sc := e.cfg
	sc.Signals.DuplicateWindow = 100 * time.Millisecond
	for _, c := range bus.StreamConfigs(sc) {
		_, err := e.js.UpdateStream(ctx, c)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		res, err = q.Retry(ctx, es[0])
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "retry once the window is over")
	assert.Equal(t, dlq.Retried, res.Outcome)
	assert.EqualValues(t, 4, e.stored(bus.StreamSignals, subject))
	assert.Empty(t, scan(t, q, dlq.Filter{}))
}

func TestQueue_purgeRemovesWhatWasSelectedOnly(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	for _, s := range []*signal.Signal{alert("s1", "A", "n", "p1"), alert("s2", "A", "n", "p2"), alert("s3", "A", "n", "p3")} {
		e.deadLetter("deduper", e.signalMsg(s, true), errors.New("x"))
	}
	e.deadLetter("writer", e.eventMsg(alert("s4", "B", "n", "p4"), "i4"), errors.New("x"))
	q := e.queue()
	all := scan(t, q, dlq.Filter{})
	require.Len(t, all, 4)

	require.NoError(t, q.Delete(ctx, all[1]))
	require.NoError(t, q.Delete(ctx, all[1]), "deleting an entry already gone is no error")
	assert.Equal(t, []uint64{all[0].Seq, all[2].Seq, all[3].Seq}, seqs(scan(t, q, dlq.Filter{})))

	// A purge of a stage stops at the last entry it was shown.
	last, err := q.Scan(ctx, dlq.Filter{Stages: []string{"deduper"}}, func(*dlq.Entry) error { return nil })
	require.NoError(t, err)
	e.deadLetter("deduper", e.signalMsg(alert("s5", "A", "n", "p5"), true), errors.New("x"))
	require.NoError(t, q.PurgeStages(ctx, []string{"deduper"}, last))
	left := scan(t, q, dlq.Filter{})
	require.Len(t, left, 2)
	assert.Equal(t, "writer", left[0].Stage)
	assert.Equal(t, "fp-p5", left[1].Fingerprint, "dead-lettered after the scan: kept")
	assert.EqualValues(t, 1, e.stored(bus.StreamDLQ, e.subj.DLQ("deduper")), "the depth the stage's gauge reads")
}

func TestOpen_refusesWhatIsNotAPipelineDLQ(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	_, err := dlq.Open(ctx, e.js, "other")
	require.Error(t, err)
	assert.Equal(t, `no stream OTHER_DLQ on the server: is bus.prefix "other" the pipeline's?`, err.Error())

	_, err = e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS_DLQ", Subjects: []string{"orders.>"}, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	_, err = dlq.Open(ctx, e.js, "orders")
	assert.ErrorIs(t, err, dlq.ErrNotDLQ)
	assert.Equal(t, "stream ORDERS_DLQ holds orders.>, not orders.dlq.>: not a stormweir DLQ stream", err.Error())
}
