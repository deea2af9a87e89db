// Package bustest is the conformance suite of a publisher (bus.Sender):
// every implementation runs it against a real JetStream server (the
// embedded one of test/testenv, stopped and started again where the suite
// needs the server to go away) and must store, acknowledge, deduplicate
// and fail alike. The promises it checks are the ones the stages build on:
// a nil error means every output is stored, in the order given; a msg-id
// is stored once; a failure is always bus.ErrPublish and never a hang.
package bustest

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// NewSender builds the publisher under test on conn, waiting at most
// timeout for acknowledgements. It cleans up with t.Cleanup.
type NewSender func(t testing.TB, conn *bus.Conn, timeout time.Duration) bus.Sender

// Run runs the conformance suite against the publishers newSender builds.
func Run(t *testing.T, newSender NewSender) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"stores_every_output_with_its_msg_id_and_headers", testStores},
		{"stored_in_the_order_given_before_it_returns", testOrder},
		{"concurrent_calls_each_get_their_own_acks", testConcurrent},
		{"msg_id_stored_once_and_counted_as_duplicate", testDuplicates},
		{"empty_call_stores_nothing", testEmpty},
		{"without_a_stream_fails", testNoStream},
		{"rejected_output_fails_the_call", testRejected},
		{"wait_bounded_by_the_timeout", testTimeout},
		{"disconnect_ends_the_wait", testDisconnect},
		{"server_back_publishing_resumes_and_retries_are_absorbed", testServerBack},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newEnv(t, newSender))
		})
	}
}

// env is one JetStream server with the pipeline's streams (file storage,
// so they survive a restart) and the publisher under test.
type env struct {
	t    testing.TB
	nats *testenv.NATS
	conn *bus.Conn
	subj bus.Subjects
	pub  bus.Sender
	new  NewSender
}

func newEnv(t testing.TB, newSender NewSender) *env {
	t.Helper()
	n := testenv.StartNATS(t)
	cfg := config.DefaultBus()
	cfg.URL = n.URL
	conn, err := bus.Connect(cfg, "bustest", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(conn.Close)
	require.NoError(t, bus.EnsureStreams(context.Background(), conn.JS, cfg))
	return &env{t: t, nats: n, conn: conn, subj: bus.NewSubjects(cfg.Prefix), pub: newSender(t, conn, 5*time.Second), new: newSender}
}

// signals is the subject the suite publishes to.
func (e *env) signals() string { return e.subj.Signals("alertmanager") }

// outputs are n outputs to subject whose data is their index and whose
// msg-ids are idPrefix + index.
func outputs(subject, idPrefix string, n int) []bus.Output {
	outs := make([]bus.Output, n)
	for i := range outs {
		outs[i] = bus.Output{Subject: subject, Data: []byte(strconv.Itoa(i)), MsgID: idPrefix + strconv.Itoa(i),
			Header: nats.Header{bus.HeaderSource: []string{"alertmanager"}}}
	}
	return outs
}

// stored returns the signals stream's messages in stream order.
func (e *env) stored() []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.conn.JS.Stream(ctx, e.subj.StreamName(bus.StreamSignals))
	require.NoError(e.t, err)
	info, err := st.Info(ctx)
	require.NoError(e.t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(e.t, err, "reading seq %d", seq)
		out = append(out, m)
	}
	return out
}

func testStores(t *testing.T, e *env) {
	res, err := e.pub.Publish(context.Background(), outputs(e.signals(), "a-", 50)...)
	require.NoError(t, err)
	assert.Zero(t, res.Duplicates)
	got := e.stored()
	require.Len(t, got, 50)
	assert.Equal(t, "6", string(got[6].Data))
	assert.Equal(t, "a-6", got[6].Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, "alertmanager", got[6].Header.Get(bus.HeaderSource))
}

// testOrder: one call's outputs are stored in the order given, all of
// them by the time it returns, though their acks come back in any order.
func testOrder(t *testing.T, e *env) {
	_, err := e.pub.Publish(context.Background(), outputs(e.signals(), "o-", 500)...)
	require.NoError(t, err)
	got := e.stored()
	require.Len(t, got, 500, "every output is stored when Publish returns")
	for i, m := range got {
		require.Equal(t, strconv.Itoa(i), string(m.Data), "stream position %d", i+1)
	}
}

// testConcurrent: calls in flight at once wait for their own acks only,
// keep their own order, and count their own duplicates.
func testConcurrent(t *testing.T, e *env) {
	// Every caller republishes the ids of the first call, so each call's
	// duplicate count is exactly 20.
	_, err := e.pub.Publish(context.Background(), outputs(e.signals(), "shared-", 20)...)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			outs := append(outputs(e.signals(), "c"+strconv.Itoa(c)+"-", 100), outputs(e.signals(), "shared-", 20)...)
			res, err := e.pub.Publish(context.Background(), outs...)
			assert.NoError(t, err)
			assert.Equal(t, 20, res.Duplicates)
		})
	}
	wg.Wait()
	got := e.stored()
	assert.Len(t, got, 20+16*100)
	next := map[string]int{}
	for _, m := range got {
		id := m.Header.Get(jetstream.MsgIDHeader)
		caller, _, _ := strings.Cut(id, "-")
		assert.Equal(t, caller+"-"+strconv.Itoa(next[caller]), id, "each call's outputs in its own order")
		next[caller]++
	}
}

func testDuplicates(t *testing.T, e *env) {
	ctx := context.Background()
	_, err := e.pub.Publish(ctx, outputs(e.signals(), "d-", 30)...)
	require.NoError(t, err)
	// A retry of the 30 with 10 new ones.
	res, err := e.pub.Publish(ctx, outputs(e.signals(), "d-", 40)...)
	require.NoError(t, err)
	assert.Equal(t, 30, res.Duplicates)
	// One id twice in one call.
	res, err = e.pub.Publish(ctx, append(outputs(e.signals(), "twice-", 1), outputs(e.signals(), "twice-", 1)...)...)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Duplicates)
	assert.Len(t, e.stored(), 41)
}

func testEmpty(t *testing.T, e *env) {
	res, err := e.pub.Publish(context.Background())
	require.NoError(t, err)
	assert.Zero(t, res.Duplicates)
	assert.Empty(t, e.stored())
}

func testNoStream(t *testing.T, e *env) {
	_, err := e.pub.Publish(context.Background(), outputs("nostream.x", "n-", 3)...)
	require.ErrorIs(t, err, bus.ErrPublish)
	assert.ErrorIs(t, err, jetstream.ErrNoStreamResponse, "the error says why")
}

// testRejected: an output the stream refuses (too large) fails the call;
// the others of the call are stored, so the retry is absorbed for them.
func testRejected(t *testing.T, e *env) {
	ctx := context.Background()
	_, err := e.conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 64, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	outs := outputs("small.x", "s-", 3)
	outs[1].Data = []byte(strings.Repeat("x", 100))
	_, err = e.pub.Publish(ctx, outs...)
	require.ErrorIs(t, err, bus.ErrPublish)
	var apiErr *jetstream.APIError
	assert.ErrorAs(t, err, &apiErr, "the server's reason is kept")

	outs[1].Data = []byte("1")
	res, err := e.pub.Publish(ctx, outs...)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Duplicates)
}

func testTimeout(t *testing.T, e *env) {
	// A subscriber that never answers: the publish is delivered, no ack
	// ever comes.
	sub, err := e.conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	pub := e.new(t, e.conn, 200*time.Millisecond)
	_, err = pub.Publish(context.Background(), outputs("silent.x", "s-", 2)...)
	require.ErrorIs(t, err, bus.ErrPublish)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// The publisher still works afterwards, and a late reply is ignored.
	_, err = pub.Publish(context.Background(), outputs(e.signals(), "after-", 2)...)
	require.NoError(t, err)
}

func testDisconnect(t *testing.T, e *env) {
	sub, err := e.conn.NC.SubscribeSync("silent.>")
	require.NoError(t, err)
	require.NoError(t, e.conn.NC.Flush())

	// A minute's timeout: only the disconnect can end this wait early,
	// and the error says which ended it.
	pub := e.new(t, e.conn, time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := pub.Publish(context.Background(), outputs("silent.x", "s-", 5)...)
		done <- err
	}()
	msg, err := sub.NextMsg(10 * time.Second) // the publish is out
	require.NoError(t, err)
	require.NotNil(t, msg)
	e.nats.Stop()
	err = <-done
	require.ErrorIs(t, err, bus.ErrPublish)
	assert.ErrorIs(t, err, nats.ErrDisconnected)
}

// testServerBack: while the server is away a call fails at once; once it
// is back (same store) the same publisher works again, and a retry of
// what was stored before is absorbed by msg-id.
func testServerBack(t *testing.T, e *env) {
	ctx := context.Background()
	_, err := e.pub.Publish(ctx, outputs(e.signals(), "b-", 10)...)
	require.NoError(t, err)

	e.nats.Stop()
	_, err = e.pub.Publish(ctx, outputs(e.signals(), "away-", 3)...)
	require.ErrorIs(t, err, bus.ErrPublish, "nothing is stored while the server is away")
	e.nats.Restart()

	require.Eventually(t, func() bool { return e.conn.NC.IsConnected() }, 10*time.Second, 10*time.Millisecond, "client reconnected")
	res, err := e.pub.Publish(ctx, outputs(e.signals(), "b-", 12)...)
	require.NoError(t, err)
	assert.Equal(t, 10, res.Duplicates, "the first ten survived the restart and are recognised")
	got := e.stored()
	require.Len(t, got, 12)
	assert.Equal(t, "b-11", got[11].Header.Get(jetstream.MsgIDHeader))
}
