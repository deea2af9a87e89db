package dlq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
)

// Output formats of the dlq commands, as replay names them.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

// CheckFormat refuses an output format the commands do not print.
func CheckFormat(f string) error {
	switch f {
	case FormatTable, FormatJSON, FormatYAML:
		return nil
	}
	return fmt.Errorf("-o %q: the output is table, json or yaml", f)
}

// View is an entry as the json and yaml outputs print it: the payload as
// JSON when it is (every stormweir message is), else as text.
type View struct {
	Seq         uint64              `json:"seq" yaml:"seq"`
	Time        time.Time           `json:"time" yaml:"time"`
	Stage       string              `json:"stage" yaml:"stage"`
	Reason      string              `json:"reason" yaml:"reason"`
	Subject     string              `json:"subject" yaml:"subject"`
	Stream      string              `json:"stream" yaml:"stream"`
	StreamSeq   uint64              `json:"streamSeq" yaml:"streamSeq"`
	Deliveries  uint64              `json:"deliveries" yaml:"deliveries"`
	MsgID       string              `json:"msgID,omitempty" yaml:"msgID,omitempty"`
	Incident    string              `json:"incident,omitempty" yaml:"incident,omitempty"`
	Fingerprint string              `json:"fingerprint,omitempty" yaml:"fingerprint,omitempty"`
	Header      map[string][]string `json:"header,omitempty" yaml:"header,omitempty"`
	Payload     any                 `json:"payload" yaml:"payload"`
}

// NewView returns e's view.
func NewView(e *Entry) View {
	v := View{Seq: e.Seq, Time: e.Time.UTC(), Stage: e.Stage, Reason: e.Reason, Subject: e.Subject, Stream: e.Stream,
		StreamSeq: e.StreamSeq, Deliveries: e.Deliveries, MsgID: e.MsgID, Incident: e.Incident, Fingerprint: e.Fingerprint,
		Header: e.Header}
	var payload any
	if json.Unmarshal(e.Data, &payload) == nil {
		v.Payload = payload
	} else {
		v.Payload = string(e.Data)
	}
	return v
}

// Printer writes entries in one format as they are scanned, so memory
// stays flat in the DLQ's size (the table buffers only its column widths
// per flush of 256 rows).
type Printer struct {
	w      io.Writer
	format string
	tw     *tabwriter.Writer
	rows   int
	n      int
}

// NewPrinter returns a Printer writing format (FormatTable, FormatJSON or
// FormatYAML) to w.
func NewPrinter(w io.Writer, format string) *Printer {
	return &Printer{w: w, format: format}
}

// Count is how many entries were printed.
func (p *Printer) Count() int { return p.n }

// Summary prints e as one row of the list (json and yaml: in full).
func (p *Printer) Summary(e *Entry) error {
	if p.format != FormatTable {
		return p.structured(e)
	}
	if p.tw == nil {
		p.tw = tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(p.tw, "SEQ\tDEAD-LETTERED\tSTAGE\tSUBJECT\tINCIDENT\tDELIVERIES\tREASON")
	}
	about := e.Incident
	if about == "" && e.Fingerprint != "" {
		about = "fp " + e.Fingerprint
	}
	fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Stage, e.Subject,
		dash(about), e.Deliveries, oneLine(e.Reason, 120))
	p.n++
	p.rows++
	if p.rows == 256 {
		p.rows = 0
		return p.tw.Flush()
	}
	return nil
}

// Detail prints e in full (json and yaml: as Summary).
func (p *Printer) Detail(e *Entry) error {
	if p.format != FormatTable {
		return p.structured(e)
	}
	var b strings.Builder
	if p.n > 0 {
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "entry %d, dead-lettered %s by the %s after %d %s\n", e.Seq, e.Time.UTC().Format(time.RFC3339Nano),
		e.Stage, e.Deliveries, plural(e.Deliveries, "delivery", "deliveries"))
	fmt.Fprintf(&b, "  reason:      %s\n", e.Reason)
	fmt.Fprintf(&b, "  original:    %s, %s #%d, message id %s\n", e.Subject, e.Stream, e.StreamSeq, dash(e.MsgID))
	if e.Incident != "" {
		fmt.Fprintf(&b, "  incident:    %s\n", e.Incident)
	}
	if e.Fingerprint != "" {
		fmt.Fprintf(&b, "  fingerprint: %s\n", e.Fingerprint)
	}
	if len(e.Header) > 0 {
		b.WriteString("  headers:\n")
		keys := make([]string, 0, len(e.Header))
		for k := range e.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %s: %s\n", k, strings.Join(e.Header[k], ", "))
		}
	}
	b.WriteString("  payload:\n")
	var ind bytes.Buffer
	if json.Indent(&ind, e.Data, "    ", "  ") == nil {
		b.WriteString("    " + ind.String() + "\n")
	} else {
		fmt.Fprintf(&b, "    %q\n", e.Data)
	}
	p.n++
	_, err := io.WriteString(p.w, b.String())
	return err
}

// structured prints e as one JSON line or one YAML document.
func (p *Printer) structured(e *Entry) error {
	v := NewView(e)
	p.n++
	if p.format == FormatJSON {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = p.w.Write(append(b, '\n'))
		return err
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "---\n%s", b)
	return err
}

// Flush writes what the table still holds.
func (p *Printer) Flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a reason on its row: newlines folded, at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
