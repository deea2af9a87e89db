package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a Prometheus text endpoint.
type Metrics map[string]*dto.MetricFamily

// Scrape reads and parses a /metrics endpoint.
func Scrape(ctx context.Context, c *http.Client, url string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := get(ctx, c, url)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics of %s: %w", url, err)
	}
	return Metrics(mf), nil
}

// Sum adds the counter, gauge or untyped series of name whose labels pass
// match (every series when match is nil).
func (m Metrics) Sum(name string, match func(labels map[string]string) bool) float64 {
	mf, ok := m[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, s := range mf.GetMetric() {
		if match != nil && !match(labelsOf(s)) {
			continue
		}
		switch {
		case s.Counter != nil:
			sum += s.GetCounter().GetValue()
		case s.Gauge != nil:
			sum += s.GetGauge().GetValue()
		case s.Untyped != nil:
			sum += s.GetUntyped().GetValue()
		}
	}
	return sum
}

// Value is Sum over the series whose labels include labels.
func (m Metrics) Value(name string, labels map[string]string) float64 {
	return m.Sum(name, func(have map[string]string) bool {
		for k, v := range labels {
			if have[k] != v {
				return false
			}
		}
		return true
	})
}

func labelsOf(s *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range s.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// Histogram is a cumulative Prometheus histogram (the sum over its
// series).
type Histogram struct {
	// Bounds are the upper bounds of the buckets, ascending; Counts the
	// cumulative counts at each bound.
	Bounds []float64
	Counts []float64
	Count  float64
	Sum    float64
}

// Histogram returns the histogram name (summed over its series).
func (m Metrics) Histogram(name string) Histogram {
	var h Histogram
	mf, ok := m[name]
	if !ok {
		return h
	}
	idx := map[float64]int{}
	for _, s := range mf.GetMetric() {
		hs := s.GetHistogram()
		if hs == nil {
			continue
		}
		h.Count += float64(hs.GetSampleCount())
		h.Sum += hs.GetSampleSum()
		for _, b := range hs.GetBucket() {
			i, ok := idx[b.GetUpperBound()]
			if !ok {
				i = len(h.Bounds)
				idx[b.GetUpperBound()] = i
				h.Bounds = append(h.Bounds, b.GetUpperBound())
				h.Counts = append(h.Counts, 0)
			}
			h.Counts[i] += float64(b.GetCumulativeCount())
		}
	}
	return h
}

// Minus returns the observations h made since earlier (the same
// histogram scraped before).
func (h Histogram) Minus(earlier Histogram) Histogram {
	d := Histogram{Bounds: slices.Clone(h.Bounds), Counts: slices.Clone(h.Counts), Count: h.Count - earlier.Count, Sum: h.Sum - earlier.Sum}
	for i, b := range earlier.Bounds {
		if j := slices.Index(d.Bounds, b); j >= 0 {
			d.Counts[j] -= earlier.Counts[i]
		}
	}
	return d
}

// Quantile estimates the q-quantile by linear interpolation within the
// bucket that holds it, as PromQL's histogram_quantile does. NaN when the
// histogram is empty.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	rank := q * h.Count
	lower, below := 0.0, 0.0
	for i, ub := range h.Bounds {
		c := h.Counts[i]
		if c >= rank {
			if math.IsInf(ub, 1) {
				return lower
			}
			if c == below {
				return ub
			}
			return lower + (ub-lower)*(rank-below)/(c-below)
		}
		lower, below = ub, c
	}
	return lower
}

// Buckets renders the non-empty buckets as "≤bound: count" pairs, to show
// the shape of a distribution (e.g. a tail made of a few slow writes).
func (h Histogram) Buckets() string {
	var parts []string
	prev := 0.0
	for i, ub := range h.Bounds {
		if n := h.Counts[i] - prev; n > 0 {
			parts = append(parts, fmt.Sprintf("≤%gs: %.0f", ub, n))
		}
		prev = h.Counts[i]
	}
	return strings.Join(parts, ", ")
}
