package review

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"
)

// Output formats of a replay.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

// Formats lists the output formats, for help text and errors.
var Formats = []string{FormatTable, FormatJSON, FormatYAML}

// CheckFormat reports an unknown output format as one line.
func CheckFormat(f string) error {
	for _, k := range Formats {
		if f == k {
			return nil
		}
	}
	return fmt.Errorf("-o %q: unknown output format (want %s)", f, strings.Join(Formats, ", "))
}

// timeFormat shows milliseconds: the stages' times are in milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// Render writes the timelines in format: a table per timeline, one JSON
// object a line (one per row, naming its timeline), or a YAML list of the
// timelines.
func Render(w io.Writer, timelines []*Timeline, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		for _, t := range timelines {
			for _, r := range t.Rows {
				if err := enc.Encode(jsonRow{Timeline: t.ID, Kind: t.Kind, Fingerprint: t.Fingerprint, Row: r}); err != nil {
					return err
				}
			}
		}
		return nil
	case FormatYAML:
		if timelines == nil {
			timelines = []*Timeline{}
		}
		b, err := yaml.Marshal(timelines)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	for i, t := range timelines {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := renderTable(w, t); err != nil {
			return err
		}
	}
	return nil
}

type jsonRow struct {
	Timeline    string `json:"timeline"`
	Kind        string `json:"kind"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Row
}

// Heading is the one line naming a timeline.
func (t *Timeline) Heading() string {
	var b strings.Builder
	switch t.Kind {
	case KindRejected:
		return "rejected webhook items"
	case KindIgnored:
		return "ignored webhook items"
	case KindNoIncident:
		b.WriteString("signals without an incident")
	default:
		b.WriteString(t.Kind + " " + t.ID)
	}
	if t.Name != "" {
		fmt.Fprintf(&b, " %s", t.Name)
	}
	if t.Target != "" {
		fmt.Fprintf(&b, " (%s)", t.Target)
	}
	if t.Fingerprint != "" {
		fmt.Fprintf(&b, " fingerprint %s", short(t.Fingerprint))
	}
	if t.Request != "" {
		fmt.Fprintf(&b, " request %s", t.Request)
	}
	return b.String()
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}

func renderTable(w io.Writer, t *Timeline) error {
	fmt.Fprintln(w, strings.ToUpper(t.Heading()[:1])+t.Heading()[1:])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSTAGE\tEVENT\tDETAIL\tEVIDENCE")
	rows := t.Rows
	for i := 0; i < len(rows); {
		// A run of the same repeated event (a flood of duplicates, a
		// storm's updates, its writes) shows as its first and last row
		// and how many are between; -o json and -o yaml list them all.
		j := i + 1
		for j < len(rows) && repeatable[rows[i].Event] && rows[j].Event == rows[i].Event && rows[j].Stage == rows[i].Stage {
			j++
		}
		writeRow(tw, &rows[i])
		if n := j - i; n >= 3 {
			fmt.Fprintf(tw, "\t\t\t… %d more %s\t\n", n-2, rows[i].Event)
		}
		if j-i >= 2 {
			writeRow(tw, &rows[j-1])
		}
		i = j
	}
	return tw.Flush()
}

// repeatable are the events a table shortens when they come in runs.
var repeatable = map[string]bool{EventDuplicate: true, EventStormUp: true, EventUpdated: true, EventSignal: true, EventRejected: true, EventIgnored: true}

func writeRow(w io.Writer, r *Row) {
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(timeFormat), r.Stage, r.Event, r.Detail, r.Evidence)
}

// formatTime writes t as the tables do.
func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }
