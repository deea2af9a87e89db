// Package recordtest is the conformance suite of record.Store: every
// implementation runs it, with a fake clock, and must decide identically.
package recordtest

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Config holds the windows a store under test must be built with; the
// suite's timelines are written against them.
var Config = config.Dedup{Window: 5 * time.Minute, ReopenWindow: 10 * time.Minute, SeenTTL: time.Hour}

// NewStore builds an empty store for one test, deciding with Config's
// windows on clk's time. It cleans up with t.Cleanup.
type NewStore func(t testing.TB, clk clock.Clock) record.Store

// Start is the fake clock's start: a whole millisecond, as stores keep
// milliseconds.
var Start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var idRE = regexp.MustCompile(`^i[0-9a-f]{20}$`)

// Run runs the conformance suite against the stores newStore builds.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s record.Store, clk *clock.Fake)
	}{
		{"new_then_occurrences", testNewThenOccurrences},
		{"event_counts_are_occurrences", testEventCounts},
		{"window_slides_then_expires", testWindow},
		{"resolve_then_reopen", testResolveReopen},
		{"reopen_window_expires", testReopenWindowExpires},
		{"resolved_unknown", testResolvedUnknown},
		{"redelivery_counts_once", testRedelivery},
		{"redelivery_after_incident_replaced", testRedeliveryReplaced},
		{"seen_mark_expires", testSeenExpires},
		{"set_route", testSetRoute},
		{"end", testEnd},
		{"finished", testFinished},
		{"fingerprints_independent", testIndependent},
		{"concurrent_decisions_exact", testConcurrent},
		{"invalid_signal_rejected", testInvalid},
		{"batch_decides_in_order", testBatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(Start)
			tc.fn(t, newStore(t, clk), clk)
		})
	}
}

// Sig returns the head of a signal of fingerprint fp with status st.
func Sig(fp string, st signal.Status) *signal.Head {
	return &signal.Head{ID: "sig-" + fp, Fingerprint: fp, Status: st, Target: signal.Target{Kind: "Pod", Name: "web-0", Namespace: "shop"}}
}

func decide(t *testing.T, s record.Store, fp string, st signal.Status, msgID string) record.Result {
	t.Helper()
	r, err := s.Decide(context.Background(), Sig(fp, st), msgID)
	require.NoError(t, err, "deciding %s on %s", msgID, fp)
	return r
}

const (
	firing   = signal.StatusFiring
	resolved = signal.StatusResolved
)

func testNewThenOccurrences(t *testing.T, s record.Store, clk *clock.Fake) {
	r := decide(t, s, "fp1", firing, "m1")
	assert.Equal(t, incident.DecisionNew, r.Decision)
	assert.False(t, r.Duplicate)
	assert.Regexp(t, idRE, r.Record.IncidentID)
	assert.Equal(t, record.IncidentID("fp1", "m1"), r.Record.IncidentID)
	assert.Equal(t, record.Record{IncidentID: r.Record.IncidentID, Fingerprint: "fp1", State: incident.StateFiring,
		Count: 1, FirstSeen: Start, LastSeen: Start, Revision: 1, Route: incident.RouteUndecided}, r.Record)
	id := r.Record.IncidentID

	for i := 2; i <= 5; i++ {
		clk.Advance(time.Second)
		r = decide(t, s, "fp1", firing, fmt.Sprintf("m%d", i))
		assert.Equal(t, incident.DecisionOccurrence, r.Decision)
		assert.Equal(t, id, r.Record.IncidentID)
		assert.EqualValues(t, i, r.Record.Count)
		assert.EqualValues(t, i, r.Record.Revision)
	}
	assert.True(t, r.Record.FirstSeen.Equal(Start))
	assert.True(t, r.Record.LastSeen.Equal(Start.Add(4*time.Second)))

	got, err := s.Get(context.Background(), "fp1")
	require.NoError(t, err)
	assert.Equal(t, r.Record, got)
}

// eventSig is the head of a Kubernetes event of uid with its own count.
func eventSig(fp, uid string, count int32) *signal.Head {
	h := Sig(fp, firing)
	h.EventUID, h.EventCount = uid, count
	return h
}

func testEventCounts(t *testing.T, s record.Store, clk *clock.Fake) {
	ctx := context.Background()
	steps := []struct {
		what     string
		sig      *signal.Head
		decision incident.Decision
		count    int64
	}{
		{"an event seen 7 times opens the incident at 7", eventSig("fp", "u1", 7), incident.DecisionNew, 7},
		{"its count rises to 9: 9 occurrences, not 8", eventSig("fp", "u1", 9), incident.DecisionOccurrence, 9},
		{"re-posted at 9: nothing new", eventSig("fp", "u1", 9), incident.DecisionOccurrence, 9},
		{"an older copy at 8: nothing new", eventSig("fp", "u1", 8), incident.DecisionOccurrence, 9},
		{"a second event of the fingerprint adds its own 3", eventSig("fp", "u2", 3), incident.DecisionOccurrence, 12},
		{"an alert is one occurrence", Sig("fp", firing), incident.DecisionOccurrence, 13},
		{"the first event rises to 10: one more", eventSig("fp", "u1", 10), incident.DecisionOccurrence, 14},
	}
	var id string
	for i, st := range steps {
		clk.Advance(time.Second)
		r, err := s.Decide(ctx, st.sig, fmt.Sprintf("m%d", i))
		require.NoError(t, err, st.what)
		assert.Equal(t, st.decision, r.Decision, st.what)
		assert.Equal(t, st.count, r.Record.Count, st.what)
		assert.EqualValues(t, i+1, r.Record.Revision, st.what)
		if id == "" {
			id = r.Record.IncidentID
		}
		assert.Equal(t, id, r.Record.IncidentID, st.what)
	}

	// The next incident of the fingerprint counts its events afresh.
	clk.Advance(Config.Window)
	r, err := s.Decide(ctx, eventSig("fp", "u1", 11), "m-next")
	require.NoError(t, err)
	assert.Equal(t, incident.DecisionNew, r.Decision)
	assert.NotEqual(t, id, r.Record.IncidentID)
	assert.EqualValues(t, 11, r.Record.Count, "a new incident starts at the event's own count")
	r, err = s.Decide(ctx, eventSig("fp", "u2", 3), "m-next-2")
	require.NoError(t, err)
	assert.EqualValues(t, 14, r.Record.Count, "the event counted in the expired incident counts again in the new one")
}

func testWindow(t *testing.T, s record.Store, clk *clock.Fake) {
	id := decide(t, s, "fp", firing, "m0").Record.IncidentID
	// Repeats just inside the window keep sliding it far past its length.
	for i := 1; i <= 3; i++ {
		clk.Advance(Config.Window - time.Millisecond)
		r := decide(t, s, "fp", firing, fmt.Sprintf("m%d", i))
		require.Equal(t, incident.DecisionOccurrence, r.Decision, "repeat %d inside the sliding window", i)
		assert.Equal(t, id, r.Record.IncidentID)
	}
	clk.Advance(Config.Window)
	_, err := s.Get(context.Background(), "fp")
	assert.ErrorIs(t, err, record.ErrNotFound, "the record expired with its window")
	r := decide(t, s, "fp", firing, "m-late")
	assert.Equal(t, incident.DecisionNew, r.Decision)
	assert.NotEqual(t, id, r.Record.IncidentID)
	assert.EqualValues(t, 1, r.Record.Count)
	assert.EqualValues(t, 1, r.Record.Revision)
}

func testResolveReopen(t *testing.T, s record.Store, clk *clock.Fake) {
	id := decide(t, s, "fp", firing, "f1").Record.IncidentID
	clk.Advance(time.Minute)
	r := decide(t, s, "fp", resolved, "r1")
	assert.Equal(t, incident.DecisionResolved, r.Decision)
	assert.Equal(t, incident.StateResolved, r.Record.State)
	assert.True(t, r.Record.ResolvedAt.Equal(Start.Add(time.Minute)))
	assert.EqualValues(t, 1, r.Record.Count)
	assert.EqualValues(t, 2, r.Record.Revision)

	// Resolved again: nothing changes.
	r = decide(t, s, "fp", resolved, "r2")
	assert.Equal(t, incident.DecisionResolvedUnknown, r.Decision)
	assert.EqualValues(t, 2, r.Record.Revision)

	// Past the firing window but inside the reopen window.
	clk.Advance(Config.Window + time.Minute)
	r = decide(t, s, "fp", firing, "f2")
	assert.Equal(t, incident.DecisionReopened, r.Decision)
	assert.Equal(t, id, r.Record.IncidentID)
	assert.Equal(t, incident.StateFiring, r.Record.State)
	assert.EqualValues(t, 1, r.Record.Flaps)
	assert.EqualValues(t, 2, r.Record.Count)
	assert.EqualValues(t, 3, r.Record.Revision)
	assert.True(t, r.Record.ResolvedAt.IsZero())

	// A second flap.
	clk.Advance(time.Second)
	assert.Equal(t, incident.DecisionResolved, decide(t, s, "fp", resolved, "r3").Decision)
	clk.Advance(time.Second)
	r = decide(t, s, "fp", firing, "f3")
	assert.Equal(t, incident.DecisionReopened, r.Decision)
	assert.EqualValues(t, 2, r.Record.Flaps)
	assert.EqualValues(t, 3, r.Record.Count)
	assert.EqualValues(t, 5, r.Record.Revision)
	assert.True(t, r.Record.FirstSeen.Equal(Start))
}

func testReopenWindowExpires(t *testing.T, s record.Store, clk *clock.Fake) {
	id := decide(t, s, "fp", firing, "f1").Record.IncidentID
	decide(t, s, "fp", resolved, "r1")
	clk.Advance(Config.ReopenWindow)
	r := decide(t, s, "fp", firing, "f2")
	assert.Equal(t, incident.DecisionNew, r.Decision)
	assert.NotEqual(t, id, r.Record.IncidentID)
	assert.Zero(t, r.Record.Flaps)
}

func testResolvedUnknown(t *testing.T, s record.Store, clk *clock.Fake) {
	r := decide(t, s, "fp", resolved, "r1")
	assert.Equal(t, incident.DecisionResolvedUnknown, r.Decision)
	assert.Empty(t, r.Record.IncidentID)
	_, err := s.Get(context.Background(), "fp")
	assert.ErrorIs(t, err, record.ErrNotFound, "a resolved signal creates no record")
	// A firing signal afterwards is a new incident, not a reopening.
	assert.Equal(t, incident.DecisionNew, decide(t, s, "fp", firing, "f1").Decision)
}

func testRedelivery(t *testing.T, s record.Store, clk *clock.Fake) {
	first := decide(t, s, "fp", firing, "m1")
	clk.Advance(time.Second)
	again := decide(t, s, "fp", firing, "m1")
	assert.True(t, again.Duplicate)
	assert.Equal(t, incident.DecisionNew, again.Decision, "a redelivery reports the original decision")
	assert.Equal(t, first.Record, again.Record)

	occ := decide(t, s, "fp", firing, "m2")
	require.EqualValues(t, 2, occ.Record.Count)
	for range 3 {
		r := decide(t, s, "fp", firing, "m2")
		assert.True(t, r.Duplicate)
		assert.Equal(t, incident.DecisionOccurrence, r.Decision)
		assert.Equal(t, occ.Record, r.Record)
	}
	// The first message again: the current record, not the one it made.
	r := decide(t, s, "fp", firing, "m1")
	assert.True(t, r.Duplicate)
	assert.EqualValues(t, 2, r.Record.Count)

	res := decide(t, s, "fp", resolved, "r1")
	require.Equal(t, incident.DecisionResolved, res.Decision)
	r = decide(t, s, "fp", resolved, "r1")
	assert.True(t, r.Duplicate)
	assert.Equal(t, incident.DecisionResolved, r.Decision)
	assert.Equal(t, res.Record, r.Record)

	u := decide(t, s, "other", resolved, "u1")
	require.Equal(t, incident.DecisionResolvedUnknown, u.Decision)
	u = decide(t, s, "other", resolved, "u1")
	assert.True(t, u.Duplicate)
	assert.Equal(t, incident.DecisionResolvedUnknown, u.Decision)
}

func testRedeliveryReplaced(t *testing.T, s record.Store, clk *clock.Fake) {
	old := decide(t, s, "fp", firing, "m1").Record.IncidentID
	clk.Advance(Config.Window)
	cur := decide(t, s, "fp", firing, "m2")
	require.Equal(t, incident.DecisionNew, cur.Decision)
	r := decide(t, s, "fp", firing, "m1")
	assert.True(t, r.Duplicate)
	assert.Equal(t, incident.DecisionNew, r.Decision)
	assert.Empty(t, r.Record.IncidentID, "incident %s is gone: nothing to republish", old)

	require.NoError(t, s.End(context.Background(), "fp", cur.Record.IncidentID))
	r = decide(t, s, "fp", firing, "m2")
	assert.True(t, r.Duplicate)
	assert.Empty(t, r.Record.IncidentID, "an ended incident has nothing to republish")
}

func testSeenExpires(t *testing.T, s record.Store, clk *clock.Fake) {
	// Keep the incident alive past the seen TTL with other messages.
	decide(t, s, "fp", firing, "m1")
	for elapsed, i := time.Duration(0), 0; elapsed <= Config.SeenTTL; i++ {
		clk.Advance(Config.Window / 2)
		elapsed += Config.Window / 2
		decide(t, s, "fp", firing, fmt.Sprintf("keepalive-%d", i))
	}
	before, err := s.Get(context.Background(), "fp")
	require.NoError(t, err)
	// Past its seen TTL, a message is no longer recognised: it counts.
	r := decide(t, s, "fp", firing, "m1")
	assert.False(t, r.Duplicate)
	assert.Equal(t, incident.DecisionOccurrence, r.Decision)
	assert.Equal(t, before.Count+1, r.Record.Count)
}

func testSetRoute(t *testing.T, s record.Store, clk *clock.Fake) {
	ctx := context.Background()
	rec := decide(t, s, "fp", firing, "m1").Record
	decide(t, s, "fp", firing, "m2")

	_, err := s.SetRoute(ctx, "fp", "i00000000000000000000", "storm1")
	assert.ErrorIs(t, err, record.ErrNotFound, "another incident's id")
	_, err = s.SetRoute(ctx, "missing", rec.IncidentID, "storm1")
	assert.ErrorIs(t, err, record.ErrNotFound, "no record")

	got, err := s.SetRoute(ctx, "fp", rec.IncidentID, "istorm0000000000000000")
	require.NoError(t, err)
	assert.Equal(t, "istorm0000000000000000", got.Route)
	assert.EqualValues(t, 2, got.Count, "the record as it stands, for the storm's count")
	assert.EqualValues(t, 2, got.Revision, "a route is not a decision")

	clk.Advance(time.Second)
	r := decide(t, s, "fp", firing, "m3")
	assert.Equal(t, "istorm0000000000000000", r.Record.Route, "the route lives with the record")
	r = decide(t, s, "fp", resolved, "m4")
	assert.Equal(t, "istorm0000000000000000", r.Record.Route)
	r = decide(t, s, "fp", firing, "m5")
	require.Equal(t, incident.DecisionReopened, r.Decision)
	assert.Equal(t, "istorm0000000000000000", r.Record.Route)

	got, err = s.SetRoute(ctx, "fp", rec.IncidentID, incident.RouteIndividual)
	require.NoError(t, err)
	assert.Equal(t, incident.RouteIndividual, got.Route)

	clk.Advance(Config.Window)
	_, err = s.SetRoute(ctx, "fp", rec.IncidentID, "x")
	assert.ErrorIs(t, err, record.ErrNotFound, "an expired record")
	assert.Equal(t, incident.RouteUndecided, decide(t, s, "fp", firing, "m6").Record.Route, "a new incident starts undecided")
}

func testEnd(t *testing.T, s record.Store, clk *clock.Fake) {
	ctx := context.Background()
	rec := decide(t, s, "fp", firing, "m1").Record
	require.NoError(t, s.End(ctx, "fp", "i00000000000000000000"))
	got, err := s.Get(ctx, "fp")
	require.NoError(t, err, "ending another incident leaves the record")
	assert.Equal(t, rec, got)

	require.NoError(t, s.End(ctx, "fp", rec.IncidentID))
	_, err = s.Get(ctx, "fp")
	assert.ErrorIs(t, err, record.ErrNotFound)
	require.NoError(t, s.End(ctx, "fp", rec.IncidentID), "ending twice is fine")
	require.NoError(t, s.End(ctx, "never", rec.IncidentID))

	r := decide(t, s, "fp", firing, "m2")
	assert.Equal(t, incident.DecisionNew, r.Decision)
	assert.NotEqual(t, rec.IncidentID, r.Record.IncidentID)
}

func testFinished(t *testing.T, s record.Store, clk *clock.Fake) {
	ctx := context.Background()
	_, err := s.LastFinished(ctx, "fp")
	assert.ErrorIs(t, err, record.ErrNotFound)

	first := record.Finished{Namespace: "shop", Name: "rr-i1", IncidentID: "i1", Phase: "Completed"}
	require.NoError(t, s.SetFinished(ctx, "fp", first, time.Hour))
	got, err := s.LastFinished(ctx, "fp")
	require.NoError(t, err)
	assert.Equal(t, first, got)

	second := record.Finished{Namespace: "shop", Name: "rr-i2", IncidentID: "i2", Phase: "Failed|rolled back"}
	require.NoError(t, s.SetFinished(ctx, "fp", second, time.Hour))
	got, err = s.LastFinished(ctx, "fp")
	require.NoError(t, err)
	assert.Equal(t, second, got, "the latest one wins")
	_, err = s.LastFinished(ctx, "other")
	assert.ErrorIs(t, err, record.ErrNotFound, "fingerprints are independent")

	clk.Advance(time.Hour)
	_, err = s.LastFinished(ctx, "fp")
	assert.ErrorIs(t, err, record.ErrNotFound, "forgotten after its ttl")
}

func testIndependent(t *testing.T, s record.Store, clk *clock.Fake) {
	a := decide(t, s, "fpA", firing, "m1")
	b := decide(t, s, "fpB", firing, "m1")
	assert.Equal(t, incident.DecisionNew, a.Decision)
	assert.Equal(t, incident.DecisionNew, b.Decision, "the same msg-id on another fingerprint is not a redelivery")
	assert.NotEqual(t, a.Record.IncidentID, b.Record.IncidentID)
	decide(t, s, "fpA", resolved, "r")
	gb, err := s.Get(context.Background(), "fpB")
	require.NoError(t, err)
	assert.Equal(t, incident.StateFiring, gb.State)
}

func testConcurrent(t *testing.T, s record.Store, clk *clock.Fake) {
	const workers, perWorker, fps = 16, 40, 4
	var mu sync.Mutex
	news := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				fp := fmt.Sprintf("fp%d", i%fps)
				// Every message is decided twice, by racing workers: the
				// second is a redelivery.
				msgID := fmt.Sprintf("w%d-%d", w/2, i)
				r, err := s.Decide(context.Background(), Sig(fp, firing), msgID)
				if !assert.NoError(t, err) {
					return
				}
				if r.Decision == incident.DecisionNew && !r.Duplicate {
					mu.Lock()
					news[fp]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	var total int64
	for i := range fps {
		fp := fmt.Sprintf("fp%d", i)
		assert.Equal(t, 1, news[fp], "exactly one new incident for %s", fp)
		rec, err := s.Get(context.Background(), fp)
		require.NoError(t, err)
		assert.Equal(t, rec.Count, rec.Revision)
		total += rec.Count
	}
	assert.EqualValues(t, workers/2*perWorker, total, "every distinct message counted once")
}

func testInvalid(t *testing.T, s record.Store, clk *clock.Fake) {
	for name, sig := range map[string]*signal.Head{
		"no fingerprint": Sig("", firing),
		"brace":          Sig("a}b", firing),
		"bad status":     Sig("fp", "pending"),
	} {
		_, err := s.Decide(context.Background(), sig, "m")
		assert.Error(t, err, name)
	}
	_, err := s.Get(context.Background(), "fp")
	assert.ErrorIs(t, err, record.ErrNotFound)
}

// testBatch: a batch decides as its signals one after another would, a
// redelivery inside the batch included, and an invalid signal fails alone.
func testBatch(t *testing.T, s record.Store, clk *clock.Fake) {
	b, ok := s.(record.BatchDecider)
	require.True(t, ok, "the store decides batches")
	decide(t, s, "fp1", firing, "m0")
	clk.Advance(time.Second)
	got := b.DecideBatch(context.Background(), []record.DecideRequest{
		{Sig: Sig("fp1", firing), MsgID: "m1"},
		{Sig: Sig("fp2", firing), MsgID: "m2"},
		{Sig: Sig("", firing), MsgID: "m3"},
		{Sig: Sig("fp1", firing), MsgID: "m1"},
		{Sig: Sig("fp1", resolved), MsgID: "m4"},
	})
	require.Len(t, got, 5)
	for i, r := range got {
		if i != 2 {
			require.NoError(t, r.Err, "request %d", i)
		}
	}
	assert.Error(t, got[2].Err, "a signal without fingerprint")

	assert.Equal(t, incident.DecisionOccurrence, got[0].Result.Decision)
	assert.EqualValues(t, 2, got[0].Result.Record.Count)
	assert.EqualValues(t, 2, got[0].Result.Record.Revision)
	assert.True(t, got[0].Result.Record.LastSeen.Equal(Start.Add(time.Second)))

	assert.Equal(t, incident.DecisionNew, got[1].Result.Decision)
	assert.Equal(t, record.IncidentID("fp2", "m2"), got[1].Result.Record.IncidentID)

	assert.True(t, got[3].Result.Duplicate, "m1 again is a redelivery")
	assert.Equal(t, incident.DecisionOccurrence, got[3].Result.Decision)
	assert.EqualValues(t, 2, got[3].Result.Record.Count)

	assert.Equal(t, incident.DecisionResolved, got[4].Result.Decision)
	assert.EqualValues(t, 3, got[4].Result.Record.Revision)
	assert.Equal(t, got[0].Result.Record.IncidentID, got[4].Result.Record.IncidentID)

	rec, err := s.Get(context.Background(), "fp1")
	require.NoError(t, err)
	assert.Equal(t, got[4].Result.Record, rec)
}
