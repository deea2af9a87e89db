package review_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/review"
)

var update = flag.Bool("update", false, "rewrite the golden files of the review tests")

// normalize keeps what a recording decides and drops what varies between
// runs: stream sequence numbers (the stages publish concurrently), the
// random namespace and bus prefix, and the seconds of each time (the test
// moves the fake clock in steps until a write or a sweep happens; each
// story's steps are a minute apart).
func normalize(s string, rec *scenario) string {
	s = strings.ReplaceAll(s, rec.NS, "prod-NS")
	s = strings.ReplaceAll(s, rec.Cfg.Writer.FallbackNamespace, "fb-NS")
	s = strings.ReplaceAll(s, strings.ToUpper(rec.Cfg.Bus.Prefix), "PREFIX")
	s = regexp.MustCompile(`#\d+`).ReplaceAllString(s, "#N")
	s = regexp.MustCompile(`(T\d\d:\d\d):\d\d\.\d{3}Z`).ReplaceAllString(s, "${1}Z")
	s = regexp.MustCompile(`\(\d+ messages\)`).ReplaceAllString(s, "(N messages)")
	return orderWithinMinute(s)
}

// rowTime matches a timeline row once normalize has cut its seconds.
var rowTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\dZ  (\S+)`)

// orderWithinMinute puts the rows of one minute in pipeline order
// (receiver, deduper, aggregator, writer). The stages record concurrently,
// so two stages' rows of the same minute (e.g. the aggregator counting a
// storm's second member and the writer creating the storm's request) come
// in either order on the stream; within a stage the recorded order stays.
func orderWithinMinute(s string) string {
	rank := map[string]int{"receiver": 0, "deduper": 1, "aggregator": 2, "writer": 3}
	lines := strings.Split(s, "\n")
	for i := 0; i < len(lines); {
		j := i
		for j < len(lines) && rowTime.MatchString(lines[j]) {
			j++
		}
		if j == i {
			i++
			continue
		}
		slices.SortStableFunc(lines[i:j], func(a, b string) int {
			ma, mb := rowTime.FindStringSubmatch(a), rowTime.FindStringSubmatch(b)
			if c := strings.Compare(a[:17], b[:17]); c != 0 {
				return c
			}
			return rank[ma[1]] - rank[mb[1]]
		})
		i = j
	}
	return strings.Join(lines, "\n")
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./pkg/review -update to write %s", path)
	assert.Equal(t, string(want), got)
}

// timelineOf returns the one timeline whose name (or kind) is name.
func timelineOf(t *testing.T, rep *review.Replay, name string) *review.Timeline {
	t.Helper()
	var found []*review.Timeline
	for _, tl := range rep.Timelines {
		if tl.Name == name && tl.Kind != review.KindNoIncident || tl.Kind == name {
			found = append(found, tl)
		}
	}
	require.Len(t, found, 1, "timelines of %s", name)
	return found[0]
}

func TestReplay_goldenTimelines(t *testing.T) {
	rec := recordScenario(t)
	ctx := context.Background()
	rep, err := review.Read(ctx, rec.JS, rec.Cfg.Bus.Prefix, review.Selector{}, nil)
	require.NoError(t, err)

	var stormID string
	for _, tl := range rep.Timelines {
		if tl.Kind == review.KindStorm {
			stormID = tl.ID
		}
	}
	require.NotEmpty(t, stormID, "the scenario opens a storm")

	for _, tc := range []struct{ file, name string }{
		{"new.txt", "KubePodCrashLooping"},
		{"flap.txt", "KubeDeploymentReplicasMismatch"},
		{"rejected.txt", review.KindRejected},
		{"ignored.txt", review.KindIgnored},
	} {
		t.Run(tc.file, func(t *testing.T) {
			tl := timelineOf(t, rep, tc.name)
			var b strings.Builder
			require.NoError(t, review.Render(&b, []*review.Timeline{tl}, review.FormatTable))
			b.WriteString("\n")
			require.NoError(t, review.WriteExplanations(&b, []*review.Timeline{tl}))
			// Ids derive from the fingerprint, which holds the test's own
			// namespace.
			out := b.String()
			if tl.Kind == review.KindIncident {
				out = strings.ReplaceAll(out, tl.ID, "INCIDENT")
				out = strings.ReplaceAll(out, tl.Fingerprint[:16], "FP")
			}
			golden(t, tc.file, normalize(out, rec))
		})
	}
	t.Run("storm.txt", func(t *testing.T) {
		// The storm by its request name, as an SRE would ask for it.
		sel := review.Selector{Incident: review.IncidentOf("rr-" + stormID)}
		one, err := review.Read(ctx, rec.JS, rec.Cfg.Bus.Prefix, sel, nil)
		require.NoError(t, err)
		require.Len(t, one.Timelines, 1)
		// Its eleventh and twelfth incidents: the one that opened it and
		// the one that joined.
		var members []*review.Timeline
		for _, tl := range rep.Timelines {
			if tl.Storm == stormID {
				members = append(members, tl)
			}
		}
		require.Len(t, members, 2)
		var b strings.Builder
		require.NoError(t, review.Render(&b, append(one.Timelines, members...), review.FormatTable))
		b.WriteString("\n")
		require.NoError(t, review.WriteExplanations(&b, append(one.Timelines, members...)))
		out := strings.ReplaceAll(b.String(), stormID, "STORM")
		out = strings.ReplaceAll(out, one.Timelines[0].Fingerprint[:16], "STORMFP")
		for i, m := range members {
			out = strings.ReplaceAll(out, m.ID, "MEMBER"+string(rune('1'+i)))
			out = strings.ReplaceAll(out, m.Fingerprint[:16], "FP"+string(rune('1'+i)))
		}
		golden(t, "storm.txt", normalize(out, rec))
	})
}

func TestReplay_selectors(t *testing.T) {
	rec := recordScenario(t)
	ctx := context.Background()
	read := func(sel review.Selector) *review.Replay {
		t.Helper()
		rep, err := review.Read(ctx, rec.JS, rec.Cfg.Bus.Prefix, sel, nil)
		require.NoError(t, err)
		return rep
	}
	all := read(review.Selector{})
	crash := timelineOf(t, all, "KubePodCrashLooping")

	ms, err := review.ParseMatchers(`alertname="KubePodCrashLooping",namespace=~"prod-.*"`)
	require.NoError(t, err)
	byMatch := read(review.Selector{Matchers: ms})
	require.Len(t, byMatch.Timelines, 1)
	assert.Equal(t, crash.ID, byMatch.Timelines[0].ID)

	byFP := read(review.Selector{Fingerprint: crash.Fingerprint})
	require.Len(t, byFP.Timelines, 1)
	assert.Equal(t, crash.Rows, byFP.Timelines[0].Rows, "a fingerprint selects the incident's whole timeline")

	byName := read(review.Selector{Incident: review.IncidentOf(crash.Request[strings.IndexByte(crash.Request, '/')+1:])})
	require.Len(t, byName.Timelines, 1)
	assert.Equal(t, crash.Rows, byName.Timelines[0].Rows, "a request name selects its incident")

	ms, err = review.ParseMatchers(`alertname="KubePodNotReady"`)
	require.NoError(t, err)
	storm := read(review.Selector{Matchers: ms})
	assert.Len(t, storm.Timelines, 13, "twelve incidents and their storm")

	// A range after everything recorded is empty, not an error.
	last := all.Timelines[len(all.Timelines)-1]
	_ = last
	none := read(review.Selector{Incident: "i00000000000000000000"})
	assert.Empty(t, none.Timelines)
}

func TestWhatIf_higherStormThresholdNamesTheIncidentsThatChange(t *testing.T) {
	rec := recordScenario(t)
	ctx := context.Background()
	all, err := review.Read(ctx, rec.JS, rec.Cfg.Bus.Prefix, review.Selector{}, nil)
	require.NoError(t, err)
	var stormID string
	var members []string
	for _, tl := range all.Timelines {
		if tl.Kind == review.KindStorm {
			stormID = tl.ID
		}
		if tl.Storm != "" {
			members = append(members, tl.ID)
		}
	}
	require.Len(t, members, 2)

	// The same settings reproduce every recorded route.
	same, err := review.WhatIf(ctx, rec.JS, rec.Cfg.Bus.Prefix, review.Selector{}, rec.Cfg, []string{"the recorded settings"}, nil)
	require.NoError(t, err)
	assert.Empty(t, same.Changes)
	assert.Equal(t, 15, same.Incidents, "the crash loop, the flap, the twelve pods and the valid job alert")

	cfg := rec.Cfg
	cfg.Aggregator.RateThreshold = 20
	d, err := review.WhatIf(ctx, rec.JS, rec.Cfg.Bus.Prefix, review.Selector{}, cfg, []string{"aggregator.rate_threshold=20"}, nil)
	require.NoError(t, err)
	var changed []string
	for _, c := range d.Changes {
		changed = append(changed, c.Incident)
		assert.Equal(t, stormID, c.Was)
		assert.Equal(t, incident.RouteIndividual, c.Now)
	}
	assert.ElementsMatch(t, members, changed, "exactly the storm's two incidents get requests of their own")
	assert.Equal(t, 1, d.StormsWas)
	assert.Equal(t, 0, d.StormsNow)

	var b strings.Builder
	require.NoError(t, d.Write(&b))
	out := b.String()
	assert.Contains(t, out, "with aggregator.rate_threshold=20: 1 storm -> 0 (1 fewer), 14 requests -> 15 (1 more) (15 incidents compared)")
	for _, id := range members {
		assert.Contains(t, out, id+" KubePodNotReady")
	}
}
