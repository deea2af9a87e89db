package reviewui

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/matcher/parse"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/review"
)

// rangeForm is the selection a page was asked for, as typed: a time
// range and label matchers, the replay's selectors.
type rangeForm struct {
	Since, Until, Match string
	// Action is the page the form submits to.
	Action string
}

// Query is the form as a query string, for links that keep the range.
func (f rangeForm) Query() string {
	v := url.Values{}
	if f.Since != "" {
		v.Set("since", f.Since)
	}
	if f.Until != "" {
		v.Set("until", f.Until)
	}
	if f.Match != "" {
		v.Set("match", f.Match)
	}
	return v.Encode()
}

// defaultSince is the range a list starts with.
const defaultSince = "24h"

// selection reads a page's range and matchers; defSince applies when the
// request names no since at all. A mistake is a 400 that says which field
// is wrong and how, under the form with the values given.
func (u *UI) selection(r *http.Request, action, defSince string) (rangeForm, review.Selector, error) {
	q := r.URL.Query()
	f := rangeForm{Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")), Match: strings.TrimSpace(q.Get("match")), Action: action}
	if !q.Has("since") {
		f.Since = defSince
	}
	now := u.o.Now()
	var sel review.Selector
	var err error
	bad := func(format string, a ...any) error {
		pe := badRequest(format, a...)
		pe.form = &f
		return pe
	}
	if sel.Since, err = review.ParseTime(f.Since, now); err != nil {
		return f, sel, bad("since %q: %v", f.Since, err)
	}
	if sel.Until, err = review.ParseTime(f.Until, now); err != nil {
		return f, sel, bad("until %q: %v", f.Until, err)
	}
	if !sel.Since.IsZero() && !sel.Until.IsZero() && !sel.Since.Before(sel.Until) {
		return f, sel, bad("empty range: since %s is not before until %s", stamp(sel.Since), stamp(sel.Until))
	}
	if f.Match != "" {
		ms, err := parse.Matchers(f.Match)
		if err != nil {
			return f, sel, bad("matcher %q: %v (write Alertmanager matchers, e.g. alertname=\"KubePodCrashLooping\",namespace=~\"prod-.*\")", f.Match, err)
		}
		sel.Matchers = ms
	}
	return f, sel, nil
}

// describe says what a selection covers, for headings and empty pages.
func describe(f rangeForm) string {
	var b strings.Builder
	switch {
	case f.Since != "" && f.Until != "":
		fmt.Fprintf(&b, "from %s to %s", f.Since, f.Until)
	case f.Since != "":
		if _, err := time.Parse(time.RFC3339Nano, f.Since); err == nil {
			fmt.Fprintf(&b, "since %s", f.Since)
		} else {
			fmt.Fprintf(&b, "in the last %s", f.Since)
		}
	case f.Until != "":
		fmt.Fprintf(&b, "until %s", f.Until)
	default:
		b.WriteString("in everything the streams keep")
	}
	if f.Match != "" {
		fmt.Fprintf(&b, " matching %s", f.Match)
	}
	return b.String()
}

// listRow is one line of the incidents list.
type listRow struct {
	T       *review.Timeline
	Sum     review.Summary
	Members int
	First   time.Time
	Last    time.Time
}

func (u *UI) incidents(w http.ResponseWriter, r *http.Request) {
	f, sel, err := u.selection(r, "/incidents", defaultSince)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if err := u.reachable(); err != nil {
		u.fail(w, r, err)
		return
	}
	rep, err := review.Read(r.Context(), u.o.JS, u.o.Config.Bus.Prefix, sel, nil)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	members := map[string]int{}
	for _, t := range rep.Timelines {
		if t.Storm != "" {
			members[t.Storm]++
		}
	}
	rows := make([]listRow, 0, len(rep.Timelines))
	var storms, incidents int
	for _, t := range rep.Timelines {
		rows = append(rows, listRow{T: t, Sum: t.Summarize(), Members: members[t.ID], First: t.Rows[0].Time, Last: t.Rows[len(t.Rows)-1].Time})
		switch t.Kind {
		case review.KindStorm:
			storms++
		case review.KindIncident:
			incidents++
		}
	}
	status := http.StatusOK
	data := map[string]any{"Title": "Incidents", "Form": f, "Rows": rows, "Range": describe(f), "Storms": storms, "Incidents": incidents,
		"Signals": rep.Signals, "Decisions": rep.Decisions, "DeadLetters": rep.DeadLetters}
	if len(rows) == 0 {
		// Nothing in the range is not a broken page, but it is not a
		// list either: say so with the status a missing thing has.
		status = http.StatusNotFound
		data["Empty"] = "nothing recorded " + describe(f)
	}
	u.render(w, status, "incidents", data)
}

// member is one incident of a storm's view.
type member struct {
	T      *review.Timeline
	Joined time.Time
	Opened bool
}

func (u *UI) timeline(w http.ResponseWriter, r *http.Request) {
	ref := strings.TrimSpace(r.PathValue("id"))
	f, sel, err := u.selection(r, "/incidents/"+url.PathEscape(ref), "")
	if err != nil {
		u.fail(w, r, err)
		return
	}
	id := review.IncidentOf(ref)
	// An incident's own rows are selected by id; a storm's view needs its
	// members' timelines too, and the groups without an incident have
	// no id to select by.
	if strings.HasPrefix(id, "i") && review.LooksLikeIncident(id) {
		sel.Incident = id
	} else if fp, ok := strings.CutPrefix(id, "fingerprint:"); ok {
		sel.Fingerprint = fp
	}
	if err := u.reachable(); err != nil {
		u.fail(w, r, err)
		return
	}
	rep, err := review.Read(r.Context(), u.o.JS, u.o.Config.Bus.Prefix, sel, nil)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	var t *review.Timeline
	var members []member
	for _, tl := range rep.Timelines {
		if tl.ID == id {
			t = tl
		}
		if tl.Storm == id && id != "" {
			m := member{T: tl}
			for _, row := range tl.Rows {
				if row.Event == review.EventMember && row.Storm == id {
					m.Joined, m.Opened = row.Time, strings.HasPrefix(row.Detail, "opened")
					break
				}
			}
			members = append(members, m)
		}
	}
	if t == nil {
		msg := fmt.Sprintf("no incident, storm or request %s in the streams (it may be older than their retention)", ref)
		if f.Since != "" || f.Until != "" || f.Match != "" {
			msg = fmt.Sprintf("no incident, storm or request %s recorded %s", ref, describe(f))
		}
		u.fail(w, r, &pageError{status: http.StatusNotFound, msg: msg})
		return
	}
	slices.SortStableFunc(members, func(x, y member) int { return cmp.Or(x.Joined.Compare(y.Joined), cmp.Compare(x.T.ID, y.T.ID)) })
	var affected []string
	seen := map[string]bool{}
	for _, m := range members {
		if m.T.Target != "" && !seen[m.T.Target] {
			seen[m.T.Target] = true
			affected = append(affected, m.T.Target)
		}
	}
	u.render(w, http.StatusOK, "timeline", map[string]any{
		"Title": cmp.Or(t.Name, t.ID), "T": t, "Sum": t.Summarize(), "Headline": headline(t), "Explain": review.Explain(t),
		"Chart": buildChart(t, members), "Members": members, "Affected": affected, "Form": f, "Storm": t.Kind == review.KindStorm,
	})
}

// headline names a timeline in a few words: its kind and its alert.
func headline(t *review.Timeline) string {
	switch t.Kind {
	case review.KindRejected:
		return "Rejected webhook items"
	case review.KindNoIncident:
		return "Signals without an incident: " + t.Name
	case review.KindStorm:
		return "Storm of " + cmp.Or(t.Name, t.ID)
	}
	return "Incident " + cmp.Or(t.Name, t.ID)
}

// setting is one field of the what-if form.
type setting struct {
	Key, Label, Help string
	// Value is what the form shows; Base the pipeline's own.
	Value, Base string
}

// settingKeys are the settings the what-if form offers, in its order:
// the deduper's and the aggregator's decisions are what a what-if re-runs.
var settingKeys = []struct{ key, label, help string }{
	{"dedup.window", "Dedup window", "repeats within it count as occurrences"},
	{"dedup.reopen_window", "Reopen window", "a resolved incident firing again within it reopens (a flap)"},
	{"aggregator.scope", "Storm scope", "what groups incidents into one storm, comma-separated"},
	{"aggregator.rate_threshold", "Rate threshold", "more new incidents than this in one scope within the rate window is a storm"},
	{"aggregator.rate_window", "Rate window", ""},
	{"aggregator.pattern_threshold", "Pattern threshold", "more distinct targets than this with one alertname within the pattern window is a storm"},
	{"aggregator.pattern_window", "Pattern window", ""},
	{"aggregator.inactivity_timeout", "Inactivity timeout", "a storm with no new member for this long closes"},
	{"aggregator.max_duration", "Max duration", "a storm closes this long after it opened"},
}

// settingValue is cfg's value of key, as the form writes it.
func settingValue(cfg config.Config, key string) string {
	d, a := cfg.Dedup, cfg.Aggregator
	switch key {
	case "dedup.window":
		return d.Window.String()
	case "dedup.reopen_window":
		return d.ReopenWindow.String()
	case "aggregator.scope":
		return strings.Join(a.Scope, ",")
	case "aggregator.rate_threshold":
		return strconv.Itoa(a.RateThreshold)
	case "aggregator.rate_window":
		return a.RateWindow.String()
	case "aggregator.pattern_threshold":
		return strconv.Itoa(a.PatternThreshold)
	case "aggregator.pattern_window":
		return a.PatternWindow.String()
	case "aggregator.inactivity_timeout":
		return a.InactivityTimeout.String()
	case "aggregator.max_duration":
		return a.MaxDuration.String()
	}
	return ""
}

// setSetting sets key of cfg from the form's value.
func setSetting(cfg *config.Config, key, val string) error {
	dur := func(p *time.Duration) error {
		d, err := time.ParseDuration(val)
		if err != nil {
			return errors.New("not a duration (e.g. 90s, 5m)")
		}
		*p = d
		return nil
	}
	num := func(p *int) error {
		n, err := strconv.Atoi(val)
		if err != nil {
			return errors.New("not a whole number")
		}
		*p = n
		return nil
	}
	d, a := &cfg.Dedup, &cfg.Aggregator
	switch key {
	case "dedup.window":
		return dur(&d.Window)
	case "dedup.reopen_window":
		return dur(&d.ReopenWindow)
	case "aggregator.scope":
		var scope []string
		for _, s := range strings.Split(val, ",") {
			if s = strings.TrimSpace(s); s != "" {
				scope = append(scope, s)
			}
		}
		a.Scope = scope
		return nil
	case "aggregator.rate_threshold":
		return num(&a.RateThreshold)
	case "aggregator.rate_window":
		return dur(&a.RateWindow)
	case "aggregator.pattern_threshold":
		return num(&a.PatternThreshold)
	case "aggregator.pattern_window":
		return dur(&a.PatternWindow)
	case "aggregator.inactivity_timeout":
		return dur(&a.InactivityTimeout)
	case "aggregator.max_duration":
		return dur(&a.MaxDuration)
	}
	return fmt.Errorf("unknown setting")
}

func (u *UI) whatIf(w http.ResponseWriter, r *http.Request) {
	f, sel, err := u.selection(r, "/whatif", defaultSince)
	q := r.URL.Query()
	cfg := u.o.Config
	cfg.Aggregator.Scope = slices.Clone(cfg.Aggregator.Scope)
	var fields []setting
	var changed []string
	var problems []string
	for _, k := range settingKeys {
		s := setting{Key: k.key, Label: k.label, Help: k.help, Base: settingValue(u.o.Config, k.key)}
		s.Value = s.Base
		if q.Has(k.key) {
			s.Value = strings.TrimSpace(q.Get(k.key))
			if s.Value != s.Base {
				if err := setSetting(&cfg, k.key, s.Value); err != nil {
					problems = append(problems, fmt.Sprintf("%s %q: %v", k.key, s.Value, err))
				} else {
					changed = append(changed, k.key+"="+s.Value)
				}
			}
		}
		fields = append(fields, s)
	}
	data := map[string]any{"Title": "What if", "Form": f, "Fields": fields, "Range": describe(f)}
	if err != nil {
		var pe *pageError
		errors.As(err, &pe)
		data["Problem"] = pe.msg
		u.render(w, pe.status, "whatif", data)
		return
	}
	if len(problems) == 0 {
		if err := errors.Join(cfg.Dedup.Validate(), cfg.Aggregator.Validate()); err != nil {
			problems = append(problems, strings.Split(err.Error(), "\n")...)
		}
	}
	if len(problems) > 0 {
		data["Problem"] = strings.Join(problems, "; ")
		u.render(w, http.StatusBadRequest, "whatif", data)
		return
	}
	if !q.Has("run") {
		u.render(w, http.StatusOK, "whatif", data)
		return
	}
	if len(changed) == 0 {
		data["Problem"] = "change a setting first: with the recorded settings nothing changes"
		u.render(w, http.StatusBadRequest, "whatif", data)
		return
	}
	if err := u.reachable(); err != nil {
		u.fail(w, r, err)
		return
	}
	d, err := review.WhatIf(r.Context(), u.o.JS, u.o.Config.Bus.Prefix, sel, cfg, changed, nil)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if d.Incidents == 0 {
		data["Problem"] = "no recorded incident " + describe(f)
		u.render(w, http.StatusNotFound, "whatif", data)
		return
	}
	changes := slices.Clone(d.Changes)
	slices.SortStableFunc(changes, func(x, y review.Change) int {
		return cmp.Or(cmp.Compare(x.Scope, y.Scope), cmp.Compare(x.Incident, y.Incident))
	})
	var text strings.Builder
	_ = d.Write(&text)
	data["Diff"] = d
	data["Changes"] = changes
	data["Summary"] = strings.SplitN(text.String(), "\n", 2)[0]
	data["Text"] = text.String()
	u.render(w, http.StatusOK, "whatif", data)
}

func (u *UI) now(w http.ResponseWriter, r *http.Request) {
	lookback := max(2*u.o.Config.Aggregator.MaxDuration, 10*time.Minute)
	if err := u.reachable(); err != nil {
		u.fail(w, r, err)
		return
	}
	p, err := review.ReadPulse(r.Context(), u.o.JS, u.o.Config.Bus.Prefix, u.o.Now(), lookback)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	u.mu.Lock()
	prev := u.last
	// Rates need two samples a little apart; a reload within a second
	// keeps the older sample, so the rate covers a useful span.
	if prev == nil || p.At.Sub(prev.At) >= time.Second {
		u.last = p
	}
	u.mu.Unlock()
	intake, decisions := p.Rates(prev)
	var lag uint64
	for _, c := range p.Consumers {
		lag += c.Pending + uint64(c.AckPending)
	}
	u.render(w, http.StatusOK, "now", map[string]any{
		"Title": "Now", "P": p, "Measured": prev != nil && p.At.After(prev.At), "Intake": intake, "DecisionRate": decisions,
		"Since": prev, "Lag": lag, "Lookback": lookback, "Refresh": 5,
	})
}

// routeLabel says where a what-if route goes, for the differences table.
func routeLabel(route string) string {
	if route == incident.RouteIndividual {
		return "own request"
	}
	return "storm " + route
}
