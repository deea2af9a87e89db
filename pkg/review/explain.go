package review

import (
	"fmt"
	"io"
	"strings"
)

// Explain tells a timeline's story in a few lines: what opened it, how
// often it repeated and flapped, where the aggregator sent it, the request
// written and how it was classified, or why it never became a request;
// and where in the streams the evidence lies.
func Explain(t *Timeline) []string {
	var lines []string
	add := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }
	var (
		opened, lastDup, resolved, created, closed *Row
		dups, flaps, writes                        int
		lastWrite, stormOpen, stormLast            *Row
		dead, refused, undecided                   []*Row
		individual                                 bool
		evidence                                   []string
	)
	for i := range t.Rows {
		r := &t.Rows[i]
		switch r.Event {
		case EventNew:
			opened = r
		case EventDuplicate:
			dups++
			lastDup = r
		case EventResolved:
			resolved = r
		case EventReopened:
			flaps++
		case EventCreated:
			created, lastWrite = r, r
			writes++
		case EventUpdated:
			lastWrite = r
			writes++
		case EventStormOpen:
			stormOpen, stormLast = r, r
		case EventStormUp:
			stormLast = r
		case EventStormClose:
			closed, stormLast = r, r
		case EventIndividual:
			individual = true
		case EventDead:
			dead = append(dead, r)
		case EventRejected, EventIgnored:
			refused = append(refused, r)
		case EventUndecided:
			undecided = append(undecided, r)
		}
		if r.Stage != StageReceiver || t.Kind == KindRejected || t.Kind == KindIgnored {
			evidence = append(evidence, r.Evidence)
		}
	}
	add("%s", strings.ToUpper(t.Heading()[:1])+t.Heading()[1:])
	switch t.Kind {
	case KindRejected:
		for _, r := range refused {
			add("never a signal: the receiver refused it at %s: %s", formatTime(r.Time), r.Detail)
		}
	case KindIgnored:
		for _, r := range refused {
			add("never a signal: the receiver accepted and ignored it at %s: %s", formatTime(r.Time), r.Detail)
		}
	case KindNoIncident:
		for _, r := range undecided {
			add("signal %s (%s) at %s never became an incident: %s", r.Signal, r.Status, formatTime(r.Time), r.Detail)
		}
	case KindStorm:
		if stormOpen != nil {
			add("opened at %s: %s", formatTime(stormOpen.Time), stormOpen.Detail)
		}
		if stormLast != nil {
			add("last counted: %s", stormLast.Detail)
		}
		if closed != nil {
			add("closed at %s", formatTime(closed.Time))
		} else {
			add("still open at the end of the range")
		}
	case KindIncident:
		if opened != nil {
			add("opened at %s by signal %s", formatTime(opened.Time), opened.Signal)
		}
		if dups > 0 {
			add("repeated %d times within the window (count %d, last at %s)", dups, lastDup.Count, formatTime(lastDup.Time))
		} else {
			add("no repeats")
		}
		if flaps > 0 {
			add("flapped %d times: resolved, then fired again within the reopen window", flaps)
		}
		if resolved != nil {
			add("resolved at %s", formatTime(resolved.Time))
		}
		switch {
		case t.Storm != "":
			add("not a request of its own: folded into storm %s (explain %s)", t.Storm, t.Storm)
		case individual:
			add("routed to a request of its own (its scope was below the storm thresholds)")
		}
		switch {
		case t.Storm != "" || created != nil:
		case writes == 0 && len(dead) == 0:
			add("no request written in the range")
		}
	}
	if created != nil {
		add("request %s created at %s; environment %s by %s; priority %s by %s",
			created.Request, formatTime(created.Time), t.environment, t.envRule, t.priority, t.prioRule)
		if t.fallbackFrom != "" {
			add("placed in the fallback namespace: namespace %s does not exist", t.fallbackFrom)
		}
	}
	if lastWrite != nil && writes > 1 {
		add("written %d times, last at %s (revision %d)", writes, formatTime(lastWrite.Time), lastWrite.Revision)
	}
	if t.Phase != "" {
		add("the remediation controller set phase %s; the incident ended", t.Phase)
	} else if created != nil {
		add("no terminal phase recorded: the remediation was still running at the end of the range")
	}
	for _, r := range dead {
		add("dead-lettered at %s: %s", formatTime(r.Time), r.Detail)
	}
	if len(evidence) > 0 {
		add("evidence: %s", compactEvidence(evidence))
	}
	return lines
}

// compactEvidence lists the first few places and how many more.
func compactEvidence(ev []string) string {
	const show = 6
	if len(ev) <= show {
		return strings.Join(ev, " ")
	}
	return fmt.Sprintf("%s … %s (%d messages)", strings.Join(ev[:show-1], " "), ev[len(ev)-1], len(ev))
}

// WriteExplanations writes each timeline's explanation, separated by
// blank lines.
func WriteExplanations(w io.Writer, timelines []*Timeline) error {
	for i, t := range timelines {
		if i > 0 {
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		for _, l := range Explain(t) {
			if _, err := fmt.Fprintln(w, l); err != nil {
				return err
			}
		}
	}
	return nil
}
