package loadgen

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/stormweir/stormweir/pkg/config"
)

// The expectation follows the aggregator's thresholds: with the defaults,
// a load whose incidents all share one alertname in four namespaces makes
// four rate storms, each after ten individual incidents.
func TestExpected_outcomeUnderThresholds(t *testing.T) {
	agg := config.DefaultAggregator()
	_, exp := Plan(Config{Alerts: 20000, DuplicateRatio: 0.7, Seed: 1})
	o := exp.Outcome(agg)
	assert.Equal(t, Outcome{Individual: 40, Storms: 4, Folded: exp.Incidents - 40}, o)
	assert.Equal(t, 44, o.Requests())

	// Spread so no scope passes the rate threshold and no alertname spans
	// more scopes than the pattern threshold: every incident is its own.
	_, exp = Plan(Config{Alerts: 2000, DuplicateRatio: 0.5, MaxPerScope: 10, Seed: 2})
	assert.Equal(t, Outcome{Individual: exp.Incidents}, exp.Outcome(agg))

	// The storm share opens one more storm; a higher threshold folds less.
	_, exp = Plan(Config{Alerts: 2000, StormRatio: 0.2, MaxPerScope: 10, Seed: 3})
	o = exp.Outcome(agg)
	assert.Equal(t, 1, o.Storms)
	assert.Equal(t, exp.StormIncidents-agg.RateThreshold, o.Folded)
	agg.RateThreshold = 1000
	assert.Equal(t, Outcome{Individual: exp.Incidents}, exp.Outcome(agg))

	// A cluster-wide scope: more than five of one alertname is a storm.
	agg = config.DefaultAggregator()
	agg.Scope = []string{"alertname"}
	_, exp = Plan(Config{Alerts: 100, Seed: 4})
	assert.Equal(t, Outcome{Individual: 10, Storms: 1, Folded: 90}, exp.Outcome(agg))
	assert.True(t, strings.HasPrefix(exp.Summary(agg), "expected: 100 incidents → 11 RemediationRequests: 10 individual, 1 storm folding 90 incidents"), exp.Summary(agg))
}

// Each alert's texts are those of its alertname.
func TestPodAlert_textsMatchTheAlertname(t *testing.T) {
	a := PodAlert("KubeContainerOOMKilled-2", "shop", "web-1", t0())
	assert.Equal(t, "Container was OOM killed.", a.Annotations["summary"])
	assert.Contains(t, a.Annotations["description"], "shop/web-1")
	assert.Contains(t, a.GeneratorURL, "OOMKilled")
	a = PodAlert(StormAlertname, StormNamespace, "storm-1", t0())
	assert.Equal(t, "Pod is crash looping.", a.Annotations["summary"])
	assert.Contains(t, a.GeneratorURL, "CrashLoopBackOff")

	w := NewWebhook(PodAlert("A", "x", "p", t0()), PodAlert("A", "y", "q", t0()))
	assert.Equal(t, map[string]string{"alertname": "A"}, w.GroupLabels)
	w = NewWebhook(PodAlert("A", "x", "p", t0()), PodAlert("B", "y", "q", t0()))
	assert.Empty(t, w.GroupLabels)
}

func t0() time.Time { return time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) }
