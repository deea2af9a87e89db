package reviewui

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/stormweir/stormweir/pkg/review"
)

// The timeline chart's geometry, in SVG user units: the chart scales to
// the page's width (viewBox), so these are proportions, not pixels.
const (
	chartWidth = 960
	laneLeft   = 96 // room for the lane names
	laneRight  = 24
	laneHeight = 34
	chartTop   = 8
	axisHeight = 28
)

// lane is one row of the chart.
type lane struct {
	Name string
	Y    float64
}

// axisTick is a labelled time on the x axis.
type axisTick struct {
	X     float64
	Label string
}

// mark is one thing drawn on a lane: a signal's tick, a decision's
// marker, a member joining a storm.
type mark struct {
	X, Y float64
	// Class is what it is for the stylesheet and the tests: "signal
	// firing", "decision ev-storm-opened", "member".
	Class string
	// Shape: "tick", "circle", "rect" (a write) or "diamond" (a flap).
	Shape string
	// Label is drawn beside it (a write's revision).
	Label string
	// Title is the tooltip: when, what, why.
	Title string
}

// chart is a timeline drawn by the template as SVG.
type chart struct {
	Width, Height float64
	Left, Right   float64
	Lanes         []lane
	Axis          []axisTick
	AxisY         float64
	Marks         []mark
	// Steps is the members count of a storm over time, a polyline.
	Steps string
	// From and To are the times the x axis spans.
	From, To time.Time
}

// laneOf is the lane a row is drawn on.
func laneOf(r *review.Row) string {
	if r.Stage == review.StageReceiver {
		return "signals"
	}
	return r.Stage
}

// buildChart draws t: every signal received as a tick on the signals
// lane (firing up, resolved down), every decision as a marker on its
// stage's lane, the writes with their revision; and for a storm a lane of
// its members joining, with their count as a step line.
func buildChart(t *review.Timeline, members []member) *chart {
	names := []string{"signals", review.StageDeduper, review.StageAggregator, review.StageWriter}
	if t.Kind == review.KindStorm {
		// A storm's own rows are the aggregator's and the writer's; its
		// signals are its members'.
		names = []string{"signals", review.StageAggregator, review.StageWriter}
	}
	has := map[string]bool{}
	for i := range t.Rows {
		has[laneOf(&t.Rows[i])] = true
	}
	if has[review.StageDLQ] {
		names = append(names, review.StageDLQ)
	}
	if len(members) > 0 {
		names = append(names, "members")
	}
	c := &chart{Width: chartWidth, Left: laneLeft, Right: chartWidth - laneRight}
	y := map[string]float64{}
	for i, n := range names {
		ly := chartTop + float64(i)*laneHeight + laneHeight/2
		c.Lanes = append(c.Lanes, lane{Name: n, Y: ly})
		y[n] = ly
	}
	c.AxisY = chartTop + float64(len(names))*laneHeight
	c.Height = c.AxisY + axisHeight

	// The x axis spans every row and every member's joining, padded so
	// the first and last markers are not cut at the edges.
	var from, to time.Time
	extend := func(at time.Time) {
		if at.IsZero() {
			return
		}
		if from.IsZero() || at.Before(from) {
			from = at
		}
		if at.After(to) {
			to = at
		}
	}
	for _, r := range t.Rows {
		extend(r.Time)
	}
	for _, m := range members {
		extend(m.Joined)
		for _, r := range m.T.Rows {
			if r.Signal != "" {
				extend(r.Time)
			}
		}
	}
	if !to.After(from) {
		from, to = from.Add(-time.Second), to.Add(time.Second)
	}
	pad := to.Sub(from) / 40
	from, to = from.Add(-pad), to.Add(pad)
	c.From, c.To = from, to
	x := func(at time.Time) float64 {
		return c.Left + (c.Right-c.Left)*float64(at.Sub(from))/float64(to.Sub(from))
	}
	for _, at := range axisTimes(from, to, 6) {
		c.Axis = append(c.Axis, axisTick{X: x(at), Label: axisLabel(at, to.Sub(from))})
	}

	// A signal decided on is shown once, on the signals lane: the
	// receiver's row of the opening signal, and each later signal from
	// the deduper's row that names it.
	shown := map[string]bool{}
	for i := range t.Rows {
		if r := &t.Rows[i]; r.Stage == review.StageReceiver && r.Signal != "" {
			shown[r.Signal] = true
		}
	}
	signalTick := func(r *review.Row) {
		status := r.Status
		if status == "" {
			status = "firing"
		}
		c.Marks = append(c.Marks, mark{X: x(r.Time), Y: y["signals"], Class: "signal " + status, Shape: "tick",
			Title: fmt.Sprintf("%s signal %s %s", stampMilli(r.Time), r.Signal, status)})
	}
	writes := 0
	for i := range t.Rows {
		if t.Rows[i].Stage == review.StageWriter {
			writes++
		}
	}
	for i := range t.Rows {
		r := &t.Rows[i]
		if !r.Decision() {
			if r.Event == review.EventSignal {
				signalTick(r)
			} else {
				// A refused webhook item: a tick of its own kind.
				c.Marks = append(c.Marks, mark{X: x(r.Time), Y: y["signals"], Class: "signal rejected", Shape: "tick",
					Title: fmt.Sprintf("%s %s: %s", stampMilli(r.Time), r.Event, r.Detail)})
			}
			continue
		}
		if r.Stage == review.StageDeduper && r.Signal != "" && !shown[r.Signal] {
			shown[r.Signal] = true
			signalTick(r)
		}
		m := mark{X: x(r.Time), Y: y[laneOf(r)], Class: "decision ev-" + r.Event, Shape: "circle",
			Title: fmt.Sprintf("%s %s %s: %s", stampMilli(r.Time), r.Stage, r.Event, r.Detail)}
		switch r.Event {
		case review.EventCreated, review.EventUpdated, review.EventEnded:
			m.Shape = "rect"
			// Revisions are labelled while they stay readable.
			if writes <= 24 && r.Revision > 0 {
				m.Label = fmt.Sprintf("r%d", r.Revision)
			}
		case review.EventReopened, review.EventStormOpen, review.EventStormClose, review.EventDead:
			m.Shape = "diamond"
		}
		c.Marks = append(c.Marks, m)
	}
	// A storm's signals are its members': each signal once, as above.
	for _, m := range members {
		seen := map[string]bool{}
		for i := range m.T.Rows {
			r := &m.T.Rows[i]
			if r.Signal == "" || seen[r.Signal] || (r.Stage != review.StageReceiver && r.Stage != review.StageDeduper) {
				continue
			}
			seen[r.Signal] = true
			signalTick(r)
		}
	}
	if len(members) > 0 {
		ly := y["members"]
		var pts []string
		top, bottom := ly-laneHeight/2+4, ly+laneHeight/2-4
		for i, m := range members {
			if m.Joined.IsZero() {
				continue
			}
			title := fmt.Sprintf("%s %s joined: %s", stampMilli(m.Joined), m.T.ID, m.T.Target)
			if m.Opened {
				title = fmt.Sprintf("%s %s opened the storm: %s", stampMilli(m.Joined), m.T.ID, m.T.Target)
			}
			c.Marks = append(c.Marks, mark{X: x(m.Joined), Y: ly, Class: "member", Shape: "circle", Title: title})
			// The step line climbs from the lane's bottom to its top as
			// members join.
			h := bottom - (bottom-top)*float64(i+1)/float64(len(members))
			if i == 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(m.Joined), bottom))
			} else {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(m.Joined), bottom-(bottom-top)*float64(i)/float64(len(members))))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(m.Joined), h))
		}
		if len(pts) > 0 {
			pts = append(pts, fmt.Sprintf("%.1f,%s", c.Right, pts[len(pts)-1][strings.IndexByte(pts[len(pts)-1], ',')+1:]))
		}
		c.Steps = strings.Join(pts, " ")
	}
	return c
}

// axisTimes returns about n round times between from and to.
func axisTimes(from, to time.Time, n int) []time.Time {
	span := to.Sub(from)
	step := time.Millisecond
	for _, s := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second, 5 * time.Second,
		10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour,
		3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour} {
		step = s
		if span/s <= time.Duration(n) {
			break
		}
	}
	var out []time.Time
	for at := from.Truncate(step); !at.After(to); at = at.Add(step) {
		if !at.Before(from) {
			out = append(out, at)
		}
	}
	return out
}

// axisLabel writes a time as precisely as the span needs.
func axisLabel(at time.Time, span time.Duration) string {
	at = at.UTC()
	switch {
	case span < 10*time.Second:
		return at.Format("15:04:05.000")
	case span < 2*24*time.Hour:
		return at.Format("15:04:05")
	}
	return at.Format("01-02 15:04")
}

// stamp is a time as the pages show it.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// stampMilli shows the milliseconds the stages record.
func stampMilli(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") }

// diamond is the points of a diamond around x, y.
func diamond(x, y float64) string {
	return fmt.Sprintf("%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f", x, y-7, x+7, y, x, y+7, x-7, y)
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"stamp":      stamp,
	"milli":      stampMilli,
	"diamond":    diamond,
	"route":      routeLabel,
	"add":        func(a, b float64) float64 { return a + b },
	"f1":         func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"pathEscape": func(s string) string { return strings.ReplaceAll(template.URLQueryEscaper(s), "+", "%20") },
	"short": func(s string) string {
		if len(s) > 16 {
			return s[:16] + "…"
		}
		return s
	},
	"isStorm": func(route string) bool { return route != "" && route != "individual" },
	"dur":     func(d time.Duration) string { return d.String() },
	"list":    func(v ...any) []any { return v },
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	},
	// requestName drops the namespace of "namespace/rr-…": the list has
	// the target's namespace already; the title keeps the whole name.
	"requestName": func(s string) string {
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[i+1:]
		}
		if len(s) > 24 {
			return s[:24] + "…"
		}
		return s
	},
}
