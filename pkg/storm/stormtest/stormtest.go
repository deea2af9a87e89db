// Package stormtest is the conformance suite every storm.Store passes: the
// Redis store and its in-memory twin must give the same answers. Time is
// driven explicitly (every call takes its instant), so the suite never
// sleeps.
package stormtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
)

// NewStore returns an empty store for one subtest; it cleans up after
// itself with t.Cleanup.
type NewStore func(t testing.TB) storm.Store

// Start is the suite's time origin.
var Start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Limits used by the suite.
const (
	Threshold  = 3
	Window     = time.Minute
	Inactivity = time.Minute
	MaxDur     = 10 * time.Minute
	Lease      = 15 * time.Second
)

// Scope returns a rate scope for alertname name in namespace ns.
func Scope(name, ns string) storm.Scope {
	sc := storm.NewScoper([]string{storm.FieldAlertname, storm.FieldNamespace})
	return sc.Rate(&signal.Signal{Name: name, Namespace: ns})
}

// Obs returns a rate observation of incident i (target pod-i) at now.
func Obs(scope storm.Scope, i int, now time.Time) storm.Observation {
	inc := fmt.Sprintf("inc-%d", i)
	return storm.Observation{
		Type: incident.StormRate, Scope: scope, IncidentID: inc, Unit: inc,
		Target:    signal.Target{Kind: "Pod", Name: fmt.Sprintf("pod-%d", i), Namespace: scope.Values["namespace"]},
		Count:     1,
		Threshold: Threshold, Window: Window, Inactivity: Inactivity, MaxDuration: MaxDur,
		Signal: []byte(`{"id":"sig","name":"X"}`),
		Now:    now,
	}
}

// Run runs the suite against the stores newStore returns.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storm.Store)
	}{
		{"rate threshold opens a storm on the first incident above it", testRateThreshold},
		{"replayed observation returns the first verdict and counts nothing", testReplay},
		{"window slides", testWindowSlides},
		{"units are counted once", testDistinctUnits},
		{"track keeps the highest count per member", testTrack},
		{"affected list is capped, total exact", testAffectedCap},
		{"inactivity closes exactly once", testInactivityClose},
		{"max duration closes an active storm", testMaxDuration},
		{"expired storm takes no members; next burst opens a new one", testNewStormAfterDeadline},
		{"lease expiry lets another claimant finish the same close", testLeaseTakeover},
		{"concurrent observers agree", testConcurrent},
		{"unknown storms are not found", testNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func observe(t testing.TB, s storm.Store, o storm.Observation) storm.Decision {
	t.Helper()
	d, err := s.Observe(context.Background(), o)
	require.NoError(t, err)
	return d
}

func testRateThreshold(t *testing.T, s storm.Store) {
	sc := Scope("KubePodCrashLooping", "shop")
	for i := range Threshold {
		d := observe(t, s, Obs(sc, i, Start.Add(time.Duration(i)*time.Second)))
		assert.Equal(t, storm.Individual, d.Verdict, "incident %d", i)
	}
	d := observe(t, s, Obs(sc, Threshold, Start.Add(10*time.Second)))
	require.Equal(t, storm.Opened, d.Verdict)
	assert.False(t, d.Replayed)
	st := d.Storm
	assert.Equal(t, sc.StormID("inc-3"), st.ID)
	assert.Equal(t, incident.StormRate, st.Type)
	assert.Equal(t, sc.Hash, st.Scope.Hash)
	assert.Equal(t, sc.Values, st.Scope.Values)
	assert.Equal(t, storm.StateOpen, st.State)
	assert.Equal(t, int64(1), st.Revision)
	assert.Equal(t, int64(1), st.Members)
	assert.Equal(t, int64(1), st.Occurrences)
	assert.Equal(t, int64(Threshold+1), st.AffectedTotal, "precursors' targets are affected too")
	require.Len(t, st.Affected, Threshold+1)
	assert.Equal(t, "pod-0", st.Affected[0].Name, "oldest first")
	assert.Equal(t, Start.Add(10*time.Second), st.DetectedAt)
	assert.JSONEq(t, `{"id":"sig","name":"X"}`, string(st.Signal))

	d = observe(t, s, Obs(sc, 4, Start.Add(11*time.Second)))
	require.Equal(t, storm.Member, d.Verdict)
	assert.Equal(t, st.ID, d.Storm.ID)
	assert.Equal(t, int64(2), d.Storm.Members)
	assert.Equal(t, int64(Threshold+2), d.Storm.AffectedTotal)
	assert.Greater(t, d.Storm.Revision, st.Revision)

	// Another scope is untouched.
	d = observe(t, s, Obs(Scope("KubePodCrashLooping", "other"), 99, Start.Add(12*time.Second)))
	assert.Equal(t, storm.Individual, d.Verdict)
}

func testReplay(t *testing.T, s storm.Store) {
	sc := Scope("A", "ns")
	for i := range Threshold + 2 {
		observe(t, s, Obs(sc, i, Start))
	}
	for i := range Threshold + 2 {
		d := observe(t, s, Obs(sc, i, Start.Add(time.Second)))
		assert.True(t, d.Replayed, "incident %d", i)
		switch {
		case i < Threshold:
			assert.Equal(t, storm.Individual, d.Verdict)
		case i == Threshold:
			assert.Equal(t, storm.Opened, d.Verdict)
		default:
			assert.Equal(t, storm.Member, d.Verdict)
		}
		if i >= Threshold {
			assert.Equal(t, int64(2), d.Storm.Members)
			assert.Equal(t, int64(Threshold+2), d.Storm.AffectedTotal)
		}
	}
	n, err := s.Open(context.Background())
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
}

func testWindowSlides(t *testing.T, s storm.Store) {
	sc := Scope("A", "ns")
	// One incident every 30s never has more than 2 in a 60s window.
	for i := range 10 {
		d := observe(t, s, Obs(sc, i, Start.Add(time.Duration(i)*30*time.Second)))
		assert.Equal(t, storm.Individual, d.Verdict, "incident %d", i)
	}
	// A burst inside one window crosses it.
	base := Start.Add(time.Hour)
	var last storm.Decision
	for i := range Threshold + 1 {
		last = observe(t, s, Obs(sc, 100+i, base.Add(time.Duration(i)*time.Second)))
	}
	assert.Equal(t, storm.Opened, last.Verdict)
	assert.Equal(t, int64(Threshold+1), last.Storm.AffectedTotal, "targets that left the window are not affected")
}

func testDistinctUnits(t *testing.T, s storm.Store) {
	sc := Scope("A", "")
	obs := func(i int, unit string) storm.Observation {
		o := Obs(sc, i, Start.Add(time.Duration(i)*time.Second))
		o.Type, o.Unit = incident.StormPattern, unit
		return o
	}
	// Many incidents, few units: no storm.
	for i := range 10 {
		assert.Equal(t, storm.Individual, observe(t, s, obs(i, fmt.Sprintf("u%d", i%Threshold))).Verdict)
	}
	d := observe(t, s, obs(10, "u-new"))
	require.Equal(t, storm.Opened, d.Verdict)
	assert.Equal(t, incident.StormPattern, d.Storm.Type)
	assert.Equal(t, int64(11), d.Storm.AffectedTotal)
}

func testTrack(t *testing.T, s storm.Store) {
	ctx := context.Background()
	sc := Scope("A", "ns")
	var d storm.Decision
	for i := range Threshold + 2 {
		d = observe(t, s, Obs(sc, i, Start))
	}
	id := d.Storm.ID
	track := func(inc string, count int64) storm.Snapshot {
		snap, err := s.Track(ctx, storm.MemberUpdate{StormID: id, IncidentID: inc, Count: count, Now: Start.Add(5 * time.Second)})
		require.NoError(t, err)
		return snap
	}
	snap := track("inc-3", 5)
	assert.Equal(t, int64(6), snap.Occurrences, "members at 5 and 1")
	rev := snap.Revision
	assert.Equal(t, Start.Add(5*time.Second), snap.LastSeen)
	assert.Equal(t, Start, snap.LastMember, "repeats do not extend the inactivity window")

	snap = track("inc-3", 5)
	assert.Equal(t, int64(6), snap.Occurrences, "same count again changes nothing")
	assert.Equal(t, rev, snap.Revision)
	snap = track("inc-3", 2)
	assert.Equal(t, int64(6), snap.Occurrences, "an older, lower count changes nothing")
	snap = track("inc-4", 3)
	assert.Equal(t, int64(8), snap.Occurrences)
	assert.Equal(t, int64(2), snap.Members)

	snap = track("inc-late", 4)
	assert.Equal(t, int64(3), snap.Members, "a tracked incident not yet a member becomes one")
	assert.Equal(t, int64(12), snap.Occurrences)

	got, err := s.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, snap.Revision, got.Revision)
	assert.Equal(t, snap.Occurrences, got.Occurrences)
}

func testAffectedCap(t *testing.T, s storm.Store) {
	sc := Scope("A", "ns")
	var d storm.Decision
	for i := range 250 {
		d = observe(t, s, Obs(sc, i, Start.Add(time.Duration(i)*time.Millisecond)))
	}
	assert.Equal(t, storm.Member, d.Verdict)
	assert.Equal(t, int64(250-Threshold), d.Storm.Members)
	assert.Equal(t, int64(250), d.Storm.AffectedTotal)
	assert.Len(t, d.Storm.Affected, incident.MaxAffected)
}

// openStorm opens a storm at Start and returns it.
func openStorm(t testing.TB, s storm.Store, sc storm.Scope, first int) storm.Snapshot {
	t.Helper()
	var d storm.Decision
	for i := first; i < first+Threshold+1; i++ {
		d = observe(t, s, Obs(sc, i, Start))
	}
	require.Equal(t, storm.Opened, d.Verdict)
	return d.Storm
}

func testInactivityClose(t *testing.T, s storm.Store) {
	ctx := context.Background()
	sc := Scope("A", "ns")
	st := openStorm(t, s, sc, 0)
	// A member at +30s moves the inactivity deadline to +90s.
	observe(t, s, Obs(sc, 50, Start.Add(30*time.Second)))

	due, err := s.Due(ctx, Start.Add(59*time.Second), 10)
	require.NoError(t, err)
	assert.Empty(t, due)
	due, err = s.Due(ctx, Start.Add(61*time.Second), 10)
	require.NoError(t, err)
	require.Equal(t, []string{st.ID}, due, "the index hint is the deadline at open")
	c, err := s.Claim(ctx, st.ID, "tok-a", Lease, Start.Add(61*time.Second))
	require.NoError(t, err)
	assert.Equal(t, storm.NotDue, c.Status)
	assert.Equal(t, Start.Add(90*time.Second), c.NextCheck)
	due, err = s.Due(ctx, Start.Add(89*time.Second), 10)
	require.NoError(t, err)
	assert.Empty(t, due, "rescheduled to the real deadline")

	now := Start.Add(91 * time.Second)
	due, err = s.Due(ctx, now, 10)
	require.NoError(t, err)
	require.Equal(t, []string{st.ID}, due)
	c, err = s.Claim(ctx, st.ID, "tok-a", Lease, now)
	require.NoError(t, err)
	require.Equal(t, storm.Claimed, c.Status)
	assert.Equal(t, storm.StateClosing, c.Storm.State)
	assert.Equal(t, Start.Add(90*time.Second), c.Storm.ClosedAt, "closed when the window ended")
	assert.Equal(t, int64(2), c.Storm.Members)

	other, err := s.Claim(ctx, st.ID, "tok-b", Lease, now)
	require.NoError(t, err)
	assert.Equal(t, storm.Busy, other.Status, "one claimant at a time")

	ok, err := s.Finish(ctx, st.ID, "tok-a")
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = s.Finish(ctx, st.ID, "tok-a")
	require.NoError(t, err)
	assert.False(t, ok, "finishing twice closes once")
	c, err = s.Claim(ctx, st.ID, "tok-b", Lease, now.Add(time.Minute))
	require.NoError(t, err)
	assert.Equal(t, storm.Done, c.Status)
	due, err = s.Due(ctx, now.Add(30*time.Minute), 10)
	require.NoError(t, err)
	assert.Empty(t, due)
	n, err := s.Open(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	got, err := s.Get(ctx, st.ID)
	require.NoError(t, err)
	assert.Equal(t, storm.StateClosed, got.State)
}

func testMaxDuration(t *testing.T, s storm.Store) {
	ctx := context.Background()
	sc := Scope("A", "ns")
	st := openStorm(t, s, sc, 0)
	// A member every 10s keeps it active past the maximum duration.
	i := 100
	for at := 10 * time.Second; at < MaxDur; at += 10 * time.Second {
		d := observe(t, s, Obs(sc, i, Start.Add(at)))
		require.Equal(t, storm.Member, d.Verdict, "at %s", at)
		i++
	}
	c, err := s.Claim(ctx, st.ID, "tok", Lease, Start.Add(MaxDur-time.Second))
	require.NoError(t, err)
	assert.Equal(t, storm.NotDue, c.Status)
	assert.Equal(t, Start.Add(MaxDur), c.NextCheck)
	c, err = s.Claim(ctx, st.ID, "tok", Lease, Start.Add(MaxDur))
	require.NoError(t, err)
	require.Equal(t, storm.Claimed, c.Status)
	assert.Equal(t, Start.Add(MaxDur), c.Storm.ClosedAt)
	ok, err := s.Finish(ctx, st.ID, "tok")
	require.NoError(t, err)
	assert.True(t, ok)

	// The storm goes on: the window is still full, so the next incident
	// opens the next storm at once.
	d := observe(t, s, Obs(sc, 999, Start.Add(MaxDur+time.Second)))
	require.Equal(t, storm.Opened, d.Verdict)
	assert.NotEqual(t, st.ID, d.Storm.ID)
}

func testNewStormAfterDeadline(t *testing.T, s storm.Store) {
	ctx := context.Background()
	sc := Scope("A", "ns")
	st := openStorm(t, s, sc, 0)
	// Past the inactivity deadline, before any sweeper closed it.
	later := Start.Add(Inactivity + 5*time.Minute)
	var d storm.Decision
	for i := range Threshold + 1 {
		d = observe(t, s, Obs(sc, 100+i, later))
		if i < Threshold {
			assert.Equal(t, storm.Individual, d.Verdict, "a quiet scope starts counting again")
		}
	}
	require.Equal(t, storm.Opened, d.Verdict)
	assert.NotEqual(t, st.ID, d.Storm.ID)
	n, err := s.Open(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)

	// Closing the old storm leaves the new one current.
	c, err := s.Claim(ctx, st.ID, "tok", Lease, later)
	require.NoError(t, err)
	require.Equal(t, storm.Claimed, c.Status)
	assert.Equal(t, Start.Add(Inactivity), c.Storm.ClosedAt)
	_, err = s.Finish(ctx, st.ID, "tok")
	require.NoError(t, err)
	m := observe(t, s, Obs(sc, 200, later.Add(time.Second)))
	assert.Equal(t, storm.Member, m.Verdict)
	assert.Equal(t, d.Storm.ID, m.Storm.ID)
}

func testLeaseTakeover(t *testing.T, s storm.Store) {
	ctx := context.Background()
	st := openStorm(t, s, Scope("A", "ns"), 0)
	now := Start.Add(2 * Inactivity)
	a, err := s.Claim(ctx, st.ID, "tok-a", Lease, now)
	require.NoError(t, err)
	require.Equal(t, storm.Claimed, a.Status)
	// tok-a dies before publishing. Within its lease nobody else may close.
	b, err := s.Claim(ctx, st.ID, "tok-b", Lease, now.Add(Lease-time.Second))
	require.NoError(t, err)
	assert.Equal(t, storm.Busy, b.Status)
	b, err = s.Claim(ctx, st.ID, "tok-b", Lease, now.Add(Lease))
	require.NoError(t, err)
	require.Equal(t, storm.Claimed, b.Status)
	assert.Equal(t, a.Storm.ClosedAt, b.Storm.ClosedAt, "same close event")
	assert.Equal(t, a.Storm.Revision, b.Storm.Revision, "same close event")
	ok, err := s.Finish(ctx, st.ID, "tok-a")
	require.NoError(t, err)
	assert.False(t, ok, "the first claimant lost its lease")
	ok, err = s.Finish(ctx, st.ID, "tok-b")
	require.NoError(t, err)
	assert.True(t, ok)
}

func testConcurrent(t *testing.T, s storm.Store) {
	sc := Scope("A", "ns")
	const n = 60
	verdicts := make([]storm.Verdict, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d, err := s.Observe(context.Background(), Obs(sc, i, Start))
			assert.NoError(t, err)
			verdicts[i] = d.Verdict
		})
	}
	wg.Wait()
	count := map[storm.Verdict]int{}
	for _, v := range verdicts {
		count[v]++
	}
	assert.Equal(t, map[storm.Verdict]int{storm.Individual: Threshold, storm.Opened: 1, storm.Member: n - Threshold - 1}, count)
	st, err := s.Get(context.Background(), sc.StormID(findOpened(verdicts)))
	require.NoError(t, err)
	assert.Equal(t, int64(n-Threshold), st.Members)
	assert.Equal(t, int64(n), st.AffectedTotal)
}

func findOpened(v []storm.Verdict) string {
	for i, x := range v {
		if x == storm.Opened {
			return fmt.Sprintf("inc-%d", i)
		}
	}
	return ""
}

func testNotFound(t *testing.T, s storm.Store) {
	ctx := context.Background()
	id := Scope("nope", "ns").StormID("x")
	_, err := s.Get(ctx, id)
	assert.True(t, errors.Is(err, storm.ErrNotFound), "get: %v", err)
	_, err = s.Track(ctx, storm.MemberUpdate{StormID: id, IncidentID: "i", Count: 1, Now: Start})
	assert.True(t, errors.Is(err, storm.ErrNotFound), "track: %v", err)
	c, err := s.Claim(ctx, id, "tok", Lease, Start)
	require.NoError(t, err)
	assert.Equal(t, storm.Done, c.Status)
}
