// Package review reads a pipeline's recorded streams to answer, after an
// incident, what arrived, what each stage decided and why, and what other
// settings would have decided. It only reads: an ordered ephemeral
// consumer per stream, never a durable consumer, Redis or the cluster.
package review

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/matcher/parse"
	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/common/model"
	"github.com/spf13/pflag"

	"github.com/stormweir/stormweir/pkg/signal"
)

// Selector chooses the recorded messages a review reads: a time range, the
// labels of their signals, and the incident they belong to. Its zero value
// selects everything. Commands build one with SelectorFlags; every command
// reading the streams (replay, explain, the DLQ) selects the same way.
type Selector struct {
	// Since and Until bound the time a message was stored on its stream
	// (zero: unbounded). Since is inclusive, Until exclusive.
	Since, Until time.Time
	// Matchers must all match a signal's labels (see SignalLabels).
	Matchers labels.Matchers
	// Incident is an incident or storm id ("i…" or "s…"); a
	// RemediationRequest name ("rr-…") is turned into its id.
	Incident string
	// Fingerprint is a signal fingerprint: its incidents, whichever id.
	Fingerprint string
}

// IsZero reports whether s selects everything.
func (s Selector) IsZero() bool {
	return s.Since.IsZero() && s.Until.IsZero() && len(s.Matchers) == 0 && s.Incident == "" && s.Fingerprint == ""
}

// MatchTime reports whether t, a message's stored time, is in the range.
func (s Selector) MatchTime(t time.Time) bool {
	return (s.Since.IsZero() || !t.Before(s.Since)) && (s.Until.IsZero() || t.Before(s.Until))
}

// MatchLabels reports whether every matcher matches ls (SignalLabels of a
// signal). A label the set does not hold matches as the empty string, as
// in Alertmanager.
func (s Selector) MatchLabels(ls map[string]string) bool {
	for _, m := range s.Matchers {
		if !m.Matches(ls[m.Name]) {
			return false
		}
	}
	return true
}

// MatchIncident reports whether an incident or storm (id) of fingerprint
// fp is selected by the Incident and Fingerprint fields. An empty id or
// fingerprint on the message side never matches a set field.
func (s Selector) MatchIncident(id, fp string) bool {
	return (s.Incident == "" || s.Incident == id) && (s.Fingerprint == "" || s.Fingerprint == fp)
}

// RequestPrefix is the prefix of every RemediationRequest name: the
// writer names a request "rr-" and its incident or storm id.
const RequestPrefix = "rr-"

// IncidentOf returns the incident or storm id that ref names: ref itself
// for an id, the id inside a RemediationRequest name ("rr-i…", "rr-s…").
// Names the writer hashed (ids that were not DNS labels) cannot be turned
// back, so they are returned as they are and match nothing.
func IncidentOf(ref string) string {
	if id, ok := strings.CutPrefix(ref, RequestPrefix); ok && id != "" {
		return id
	}
	return ref
}

// LooksLikeIncident reports whether ref names an incident or a storm (an id
// or a RemediationRequest name) rather than a fingerprint.
func LooksLikeIncident(ref string) bool {
	id := IncidentOf(ref)
	return id != ref || (len(id) > 1 && (id[0] == 'i' || id[0] == 's') && len(id) < 60)
}

// SelectorFlags are the command-line flags of a Selector, shared by every
// command that reads the streams. Bind them to a flag set, parse, then
// call Selector.
type SelectorFlags struct {
	Since, Until string
	Match        []string
	Incident     string
	Fingerprint  string
}

// Bind adds the selector's flags to fs.
func (f *SelectorFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Since, "since", "", `start of the range: RFC 3339 time or a duration before now (e.g. "2h", "30m", "1d")`)
	fs.StringVar(&f.Until, "until", "", `end of the range (exclusive): RFC 3339 time or a duration before now`)
	fs.StringArrayVar(&f.Match, "match", nil, `Alertmanager label matchers the signals must match, e.g. 'alertname="KubePodCrashLooping",namespace=~"prod-.*"' (repeatable; all must match)`)
	fs.StringVar(&f.Incident, "incident", "", "an incident or storm id, or a RemediationRequest name")
	fs.StringVar(&f.Fingerprint, "fingerprint", "", "a signal fingerprint")
}

// Selector parses the flags, relative times counted back from now. Every
// error is one line naming the flag and what is wrong with its value.
func (f *SelectorFlags) Selector(now time.Time) (Selector, error) {
	var s Selector
	var err error
	if s.Since, err = ParseTime(f.Since, now); err != nil {
		return Selector{}, fmt.Errorf("--since %q: %w", f.Since, err)
	}
	if s.Until, err = ParseTime(f.Until, now); err != nil {
		return Selector{}, fmt.Errorf("--until %q: %w", f.Until, err)
	}
	if !s.Since.IsZero() && !s.Until.IsZero() && !s.Since.Before(s.Until) {
		return Selector{}, fmt.Errorf("empty range: --since %s is not before --until %s",
			s.Since.UTC().Format(time.RFC3339), s.Until.UTC().Format(time.RFC3339))
	}
	for _, in := range f.Match {
		ms, err := ParseMatchers(in)
		if err != nil {
			return Selector{}, err
		}
		s.Matchers = append(s.Matchers, ms...)
	}
	s.Incident = IncidentOf(strings.TrimSpace(f.Incident))
	s.Fingerprint = strings.TrimSpace(f.Fingerprint)
	return s, nil
}

// ParseMatchers parses Alertmanager label matchers with Alertmanager's
// own parser (the UTF-8 matchers of amtool and the API, braces optional).
func ParseMatchers(in string) (labels.Matchers, error) {
	if strings.TrimSpace(in) == "" {
		return nil, errors.New("--match: empty matcher")
	}
	ms, err := parse.Matchers(in)
	if err != nil {
		return nil, fmt.Errorf("--match %q: %w", in, err)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("--match %q: no matcher", in)
	}
	return ms, nil
}

// ParseTime reads an RFC 3339 time, or a duration before now in
// Prometheus' notation ("90s", "2h", "1d", "1w"). Empty is the zero time
// (unbounded).
func ParseTime(in string, now time.Time) (time.Time, error) {
	in = strings.TrimSpace(in)
	if in == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, in); err == nil {
		return t, nil
	}
	d, err := model.ParseDuration(in)
	if err != nil {
		return time.Time{}, errors.New(`neither an RFC 3339 time (2026-11-30T01:00:00Z) nor a duration before now (2h, 1d)`)
	}
	return now.Add(-time.Duration(d)), nil
}

// SignalLabels is the label set matchers see for sig: its labels, plus
// alertname, namespace and severity from the signal when the labels lack
// them (a Kubernetes event has the reason as its name), and the
// stormweir-side fields source, status, target_kind and target_name.
func SignalLabels(sig *signal.Signal) map[string]string {
	ls := make(map[string]string, len(sig.Labels)+7)
	for k, v := range sig.Labels {
		ls[k] = v
	}
	setDefault := func(k, v string) {
		if _, ok := ls[k]; !ok && v != "" {
			ls[k] = v
		}
	}
	setDefault("alertname", sig.Name)
	setDefault("namespace", sig.Namespace)
	setDefault("severity", string(sig.Severity))
	setDefault("source", string(sig.Source))
	setDefault("status", string(sig.Status))
	setDefault("target_kind", sig.Target.Kind)
	setDefault("target_name", sig.Target.Name)
	return ls
}
