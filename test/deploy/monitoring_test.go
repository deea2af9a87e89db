package deploy

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/test/testenv"
)

// query is one PromQL expression of the monitoring the chart ships.
type query struct {
	where string // "alert X" or "panel Y"
	expr  string
}

// targetLabels are added by the scrape (and the PodMonitor's relabeling),
// not by the stages: queries may use them on any metric.
var targetLabels = map[string]bool{
	"namespace": true, "pod": true, "container": true, "instance": true, "job": true,
	"endpoint": true, "service": true, "component": true,
}

// TestMonitoring_queriesParseAndNameExportedMetrics parses every alert
// expression of the PrometheusRule and every query of the Grafana
// dashboard with Prometheus's own parser, and checks each metric they
// select against the registries the four stages build: the metric must be
// registered (a histogram's _bucket, _count and _sum by its base name),
// every label matched must be one of its labels or a scrape target label,
// and every le matched must be one of the histogram's buckets. A query on
// a metric no stage exports fails here, not silently in production.
func TestMonitoring_queriesParseAndNameExportedMetrics(t *testing.T) {
	var ha *rendering
	for _, r := range renders(t) {
		if r.spec.name == "helm-ha" {
			ha = r
		}
	}
	require.NotNil(t, ha)
	queries := alertQueries(t, ha)
	require.Len(t, queries, 13, "the PrometheusRule's alerts")
	dashboard := dashboardQueries(t, ha)
	require.NotEmpty(t, dashboard)
	queries = append(queries, dashboard...)

	exported := stageMetrics(t)
	p := parser.NewParser(parser.Options{})
	used := map[string]bool{}
	for _, q := range queries {
		expr, err := p.ParseExpr(q.expr)
		require.NoError(t, err, "%s: %s", q.where, q.expr)
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			vs, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			var matchers []*labels.Matcher
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName {
					name = m.Value
					continue
				}
				matchers = append(matchers, m)
			}
			used[name] = true
			m, ok := exported.lookup(name)
			if !assert.True(t, ok, "%s: metric %s is not exported by any stage", q.where, name) {
				return nil
			}
			for _, lm := range matchers {
				switch {
				case targetLabels[lm.Name]:
				case lm.Name == "le" && m.suffix == "_bucket":
					assert.True(t, m.hasBucket(lm.Value), "%s: %s has no bucket le=%q (buckets %v)", q.where, m.name, lm.Value, m.buckets)
				default:
					assert.True(t, m.labels[lm.Name], "%s: %s has no label %q (labels %v)", q.where, m.name, lm.Name, m.labelList())
				}
			}
			return nil
		})
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d queries use %d metrics: %s", len(queries), len(names), strings.Join(names, ", "))
}

// alertQueries returns the PrometheusRule's alert expressions.
func alertQueries(t testing.TB, r *rendering) []query {
	t.Helper()
	rules := r.byKind("PrometheusRule")
	require.Len(t, rules, 1)
	groups, _, err := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	require.NoError(t, err)
	var out []query
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, rule := range rs {
			rm := rule.(map[string]any)
			alert, _ := rm["alert"].(string)
			require.NotEmpty(t, alert, "a rule without an alert name")
			sev, _, _ := unstructured.NestedString(rm, "labels", "severity")
			assert.Contains(t, []string{"warning", "critical"}, sev, "alert %s: severity", alert)
			summary, _, _ := unstructured.NestedString(rm, "annotations", "summary")
			assert.NotEmpty(t, summary, "alert %s: summary", alert)
			out = append(out, query{where: "alert " + alert, expr: rm["expr"].(string)})
		}
	}
	return out
}

// dashboardQueries returns the Grafana dashboard's panel queries and its
// variable queries, with Grafana's variables replaced by values PromQL
// accepts.
func dashboardQueries(t testing.TB, r *rendering) []query {
	t.Helper()
	var raw string
	for _, cm := range r.byKind("ConfigMap") {
		if s, ok, _ := unstructured.NestedString(cm.Object, "data", "stormweir.json"); ok {
			raw = s
			assert.Equal(t, "1", cm.GetLabels()["grafana_dashboard"], "the sidecar label")
		}
	}
	require.NotEmpty(t, raw, "no dashboard ConfigMap in %s", r.spec.name)
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal([]byte(raw), &dash), "the dashboard is JSON")
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$namespace", "stormweir")
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{where: "panel " + p.Title, expr: vars.Replace(tg.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			out = append(out, query{where: "variable " + v.Name, expr: m[1]})
		}
	}
	return out
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// exportedMetric is one metric the stages register.
type exportedMetric struct {
	name   string
	suffix string // "_bucket", "_count", "_sum" when looked up by a series name
	labels map[string]bool
	// kind and buckets are known once the metric has been gathered (a
	// vector shows only after its first child).
	kind    string
	buckets []float64
}

func (m exportedMetric) labelList() []string {
	out := make([]string, 0, len(m.labels))
	for l := range m.labels {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

func (m exportedMetric) hasBucket(le string) bool {
	v, err := strconv.ParseFloat(le, 64)
	if err != nil {
		return false
	}
	for _, b := range m.buckets {
		if b == v || (math.IsInf(b, 1) && math.IsInf(v, 1)) {
			return true
		}
	}
	return false
}

type metricSet map[string]exportedMetric

// lookup finds a series name: the metric itself, or a histogram's or
// summary's _bucket, _count or _sum series. A metric gathered with another
// type has no such series; one not gathered yet (a vector without
// children) is taken by its registered base name.
func (s metricSet) lookup(series string) (exportedMetric, bool) {
	if m, ok := s[series]; ok {
		return m, true
	}
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(series, suf); ok {
			if m, ok := s[base]; ok && (m.kind == "" || m.kind == "histogram" || (m.kind == "summary" && suf != "_bucket")) {
				m.suffix = suf
				return m, true
			}
		}
	}
	return exportedMetric{}, false
}

var (
	descName   = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)
	descConst  = regexp.MustCompile(`constLabels: \{(.*)\}, variableLabels: \{([^}]*)\}\}$`)
	constLabel = regexp.MustCompile(`(\w+)="`)
)

// stageMetrics builds each stage as its binary does (its own process and
// registry, the binaries' wiring) against an in-process NATS and the
// test API server, and collects every metric they register: descriptors
// for names and labels, a gather for histogram buckets.
func stageMetrics(t *testing.T) metricSet {
	t.Helper()
	rc := startAPIServer(t)
	n := testenv.StartNATS(t)
	cfg := config.Default()
	cfg.Bus.URL = n.URL
	cfg.Bus.Prefix = "swdeploy" + testenv.RandomID()
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ} {
		s.Storage, s.MaxBytes = "memory", 64<<20
	}
	cfg.Receiver.Listen, cfg.Worker.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{"deploy-test-token-0123456789abcdef"}
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)

	// Each stage in its own process, as the binaries run them, built by
	// the same wiring (app); memory stores, the test API server.
	regs := map[string]*prometheus.Registry{}
	for _, stage := range app.Stages {
		a, err := app.New(ctx, cfg, log, stage, app.Options{MemoryStores: true, RestConfig: rc})
		require.NoError(t, err, stage)
		t.Cleanup(a.Close)
		_, err = a.Build(ctx, stage)
		require.NoError(t, err, stage)
		regs[stage] = a.Process.Registry
	}

	set := metricSet{}
	for stage, reg := range regs {
		ch := make(chan *prometheus.Desc)
		go func() { reg.Describe(ch); close(ch) }()
		for d := range ch {
			s := d.String()
			nm := descName.FindStringSubmatch(s)
			require.NotNil(t, nm, "%s: cannot read descriptor %s", stage, s)
			m, ok := set[nm[1]]
			if !ok {
				m = exportedMetric{name: nm[1], labels: map[string]bool{}}
			}
			if cl := descConst.FindStringSubmatch(s); cl != nil {
				for _, l := range constLabel.FindAllStringSubmatch(cl[1], -1) {
					m.labels[l[1]] = true
				}
				for _, l := range strings.Split(cl[2], ",") {
					if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
						m.labels[l] = true
					}
				}
			}
			set[m.name] = m
		}
		families, err := reg.Gather()
		require.NoError(t, err, stage)
		for _, f := range families {
			m, ok := set[f.GetName()]
			if !ok {
				continue
			}
			m.kind = strings.ToLower(f.GetType().String())
			if f.GetType() == dto.MetricType_HISTOGRAM && len(f.GetMetric()) > 0 {
				m.buckets = nil
				for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
					m.buckets = append(m.buckets, b.GetUpperBound())
				}
			}
			set[m.name] = m
		}
	}
	require.Contains(t, set, "stormweir_build_info")
	return set
}
