package review_test

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/signal"
)

func parseSelector(t *testing.T, now time.Time, args ...string) (review.Selector, error) {
	t.Helper()
	var f review.SelectorFlags
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f.Bind(fs)
	require.NoError(t, fs.Parse(args))
	return f.Selector(now)
}

func TestSelectorFlags_parse(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s, err := parseSelector(t, now, "--since", "2h", "--until", "2026-11-30T11:30:00Z",
		"--match", `alertname="KubePodCrashLooping",namespace=~"prod-.*"`, "--match", `severity!="info"`,
		"--incident", "rr-i0123456789abcdef0123", "--fingerprint", "abc")
	require.NoError(t, err)
	assert.Equal(t, now.Add(-2*time.Hour), s.Since)
	assert.Equal(t, time.Date(2026, 11, 30, 11, 30, 0, 0, time.UTC), s.Until)
	assert.Len(t, s.Matchers, 3)
	assert.Equal(t, "i0123456789abcdef0123", s.Incident)
	assert.Equal(t, "abc", s.Fingerprint)

	assert.True(t, s.MatchTime(now.Add(-time.Hour)))
	assert.False(t, s.MatchTime(now.Add(-3*time.Hour)))
	assert.False(t, s.MatchTime(s.Until), "until is exclusive")
	assert.True(t, s.MatchIncident("i0123456789abcdef0123", "abc"))
	assert.False(t, s.MatchIncident("i0123456789abcdef0123", "other"))

	sig := &signal.Signal{Name: "KubePodCrashLooping", Namespace: "prod-eu", Severity: signal.SeverityCritical,
		Labels: map[string]string{"alertname": "KubePodCrashLooping", "namespace": "prod-eu"}}
	assert.True(t, s.MatchLabels(review.SignalLabels(sig)))
	sig.Labels["namespace"] = "staging"
	assert.False(t, s.MatchLabels(review.SignalLabels(sig)))

	zero, err := parseSelector(t, now)
	require.NoError(t, err)
	assert.True(t, zero.IsZero())
}

func TestSelectorFlags_badInput(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "yesterday"}, `--since "yesterday": neither an RFC 3339 time`},
		{[]string{"--until", "2026-13-01"}, `--until "2026-13-01": neither an RFC 3339 time`},
		{[]string{"--since", "1h", "--until", "2h"}, "empty range: --since 2026-11-30T11:00:00Z is not before --until 2026-11-30T10:00:00Z"},
		{[]string{"--match", `alertname=~"(`}, `--match "alertname=~\"(": `},
		{[]string{"--match", `alertname=`}, `--match "alertname=": `},
		{[]string{"--match", ` `}, "--match: empty matcher"},
	} {
		_, err := parseSelector(t, now, tc.args...)
		require.Error(t, err, tc.args)
		assert.Contains(t, err.Error(), tc.want)
		assert.NotContains(t, err.Error(), "\n")
	}
}
