package allinone

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/writer"
)

// PrinterStage is the printer's durable consumer. It is not the writer's,
// so pointing the same data dir at a cluster later still writes every
// retained incident.
const PrinterStage = "printer"

// Printer is the sink of a run without a cluster: it consumes what the
// writer would, prints each new RemediationRequest as YAML and each status
// change as a comment line.
type Printer struct {
	p       *service.Process
	preview *writer.Preview
	out     io.Writer
	mu      sync.Mutex
	worker  *bus.Worker
}

// NewPrinter wires a Printer on the process's bus and creates or updates
// its durable consumer.
func NewPrinter(ctx context.Context, p *service.Process, out io.Writer) (*Printer, error) {
	pv, err := writer.NewPreview(p.Config.Writer)
	if err != nil {
		return nil, err
	}
	pr := &Printer{p: p, preview: pv, out: out}
	pr.worker, err = p.Worker(ctx, service.WorkerSpec{
		Consumer: bus.ConsumerSpec{Stage: PrinterStage, Stream: bus.StreamIncidents, Subjects: []string{bus.NewSubjects(p.Config.Bus.Prefix).AllIncidents()}},
		Handler:  bus.HandlerFunc(pr.handle),
		// One YAML document at a time, in order.
		Concurrency: 1,
	})
	if err != nil {
		return nil, err
	}
	return pr, nil
}

// Run consumes until ctx ends.
func (pr *Printer) Run(ctx context.Context) error { return pr.worker.Run(ctx) }

func (pr *Printer) handle(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
	subj := bus.NewSubjects(pr.p.Config.Bus.Prefix)
	var doc any
	var line string
	switch m.Subject {
	case subj.IncidentsStorm():
		var s incident.Storm
		if err := json.Unmarshal(m.Data, &s); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decoding storm event: %w", err))
		}
		if s.Phase == incident.StormOpened {
			rr, err := pr.preview.StormRequest(ctx, &s)
			if err != nil {
				return nil, err
			}
			doc = rr
		}
		line = fmt.Sprintf("# %s storm %s: members=%d occurrences=%d affected=%d", writer.RequestName(s.StormID), s.Phase, s.Members, s.Occurrences, s.AffectedTotal)
	default:
		var e incident.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decoding incident event: %w", err))
		}
		if m.Subject == subj.IncidentsOpen() {
			rr, err := pr.preview.Request(ctx, &e)
			if err != nil {
				return nil, err
			}
			doc = rr
		}
		line = fmt.Sprintf("# %s %s: state=%s occurrences=%d flaps=%d", writer.RequestName(e.IncidentID), e.Decision, e.State, e.Count, e.Flaps)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if doc != nil {
		b, err := yaml.Marshal(doc)
		if err != nil {
			return nil, bus.Permanent(err)
		}
		fmt.Fprintf(pr.out, "---\n%s", b)
	}
	fmt.Fprintln(pr.out, line)
	return nil, nil
}
