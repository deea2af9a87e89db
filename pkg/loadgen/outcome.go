package loadgen

import (
	"fmt"
	"strings"

	"github.com/stormweir/stormweir/pkg/config"
)

// Outcome is what the pipeline makes of a load's new incidents under
// given aggregator thresholds: which stay individual requests and which
// storm requests fold the rest.
type Outcome struct {
	// Individual incidents each get a RemediationRequest of their own.
	Individual int `json:"individual"`
	// Storms are the storm requests; Folded the incidents they fold.
	Storms int `json:"storms"`
	Folded int `json:"folded"`
}

// Requests is the number of RemediationRequests the load makes.
func (o Outcome) Requests() int { return o.Individual + o.Storms }

// Outcome applies the aggregator's rules (DESIGN §4) to the load's new
// incidents in sending order: in each rate scope the first rate_threshold
// stay individual and the next opens a storm the later ones join; what
// the rate detector leaves individual, the pattern detector counts by
// alertname over distinct rate scopes, and more than pattern_threshold
// of them open a pattern storm. It assumes every new incident falls
// within the windows and no storm closes during the run: true for a run
// shorter than aggregator.rate_window, which a load sent at full speed is.
func (e Expected) Outcome(agg config.Aggregator) Outcome {
	var o Outcome
	rateCount := map[string]int{}
	rateStorm := map[string]bool{}
	patternScopes := map[string]map[string]bool{}
	patternStorm := map[string]bool{}
	for _, p := range e.order {
		scope := p.scope(agg.Scope)
		if rateStorm[scope] {
			o.Folded++
			continue
		}
		rateCount[scope]++
		if rateCount[scope] > agg.RateThreshold {
			rateStorm[scope] = true
			o.Storms++
			o.Folded++
			continue
		}
		if patternStorm[p.name] {
			o.Folded++
			continue
		}
		if patternScopes[p.name] == nil {
			patternScopes[p.name] = map[string]bool{}
		}
		patternScopes[p.name][scope] = true
		if len(patternScopes[p.name]) > agg.PatternThreshold {
			patternStorm[p.name] = true
			o.Storms++
			o.Folded++
			continue
		}
		o.Individual++
	}
	return o
}

// scope is p's rate scope under the configured scope fields.
func (p pod) scope(fields []string) string {
	vals := make([]string, len(fields))
	for i, f := range fields {
		switch f {
		case "alertname":
			vals[i] = p.name
		case "namespace":
			vals[i] = p.namespace
		case "pod", "target.name":
			vals[i] = p.pod
		default:
			// Every other label is the same on every alert of a load.
			vals[i] = f
		}
	}
	return strings.Join(vals, "\x00")
}

// Summary is the report's last line: what the pipeline will make of the
// load under agg.
func (e Expected) Summary(agg config.Aggregator) string {
	o := e.Outcome(agg)
	storms := "storms"
	if o.Storms == 1 {
		storms = "storm"
	}
	return fmt.Sprintf("expected: %d incidents → %d RemediationRequests: %d individual, %d %s folding %d incidents (a storm: more than %d new in one %s scope, or one alertname in more than %d scopes)",
		e.Incidents, o.Requests(), o.Individual, o.Storms, storms, o.Folded, agg.RateThreshold, strings.Join(agg.Scope, "+"), agg.PatternThreshold)
}
