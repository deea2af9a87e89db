package allinone

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/yaml"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/writer"
)

// PrinterStage names the sink that prints instead of writing. It reads
// with the writer's durable consumer: the incidents stream keeps each
// message until the writer's consumer has it (interest retention), so a
// consumer of its own would leave every incident waiting for a writer
// that never runs, until the stream is full. Pointing the same data dir at
// a cluster later writes what was not printed yet.
const PrinterStage = "printer"

// Printer is the sink of a run without a cluster: it consumes what the
// writer would and prints what the writer would write, no more. A create
// is the request as YAML, exactly as the writer would create it (its
// placement, including the fallback namespace, and the status the create
// carries); a status write is one comment line. Status writes are spaced
// as the writer's coalescer spaces them (writer.coalesce_interval doubling
// up to writer.coalesce_max_interval while a request keeps changing), so a
// storm of members prints a few lines, not one per member, and an event
// the writer would skip (stale, repeated, folded into a request that
// exists) prints nothing.
type Printer struct {
	p       *service.Process
	preview *writer.Preview
	out     io.Writer
	clk     clock.Clock
	worker  *bus.Worker

	interval, maxInterval time.Duration

	mu      sync.Mutex
	entries map[string]*printEntry
}

// printEntry is one request's spacing, as the coalescer keeps it.
type printEntry struct {
	lastWrite time.Time
	spacing   time.Duration
	// pending is the newest unwritten status line; urgent when it carries
	// a resolve or a storm close.
	pending string
	urgent  bool
}

// NewPrinter wires a Printer on the process's bus and creates or updates
// its durable consumer. clk spaces the status lines.
func NewPrinter(ctx context.Context, p *service.Process, out io.Writer, clk clock.Clock) (*Printer, error) {
	pv, err := writer.NewPreview(p.Config.Writer)
	if err != nil {
		return nil, err
	}
	pr := &Printer{p: p, preview: pv, out: out, clk: clk, entries: map[string]*printEntry{},
		interval: p.Config.Writer.CoalesceInterval, maxInterval: p.Config.Writer.CoalesceMaxInterval}
	pr.worker, err = p.Worker(ctx, service.WorkerSpec{
		Consumer: bus.PipelineConsumer(bus.NewSubjects(p.Config.Bus.Prefix), bus.ConsumerWriter),
		Handler:  bus.HandlerFunc(pr.handle),
		// One event at a time, in order: the preview is the cluster's
		// stand-in and decides like the writer, one write after another.
		Concurrency: 1,
	})
	if err != nil {
		return nil, err
	}
	return pr, nil
}

// Run consumes until ctx ends, writing the status lines whose spacing ran
// out; at the end it writes the ones still pending, as the writer's drain
// does.
func (pr *Printer) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pr.worker.Run(gctx) })
	g.Go(func() error {
		for {
			t := pr.clk.NewTimer(pr.interval)
			select {
			case <-gctx.Done():
				t.Stop()
				return nil
			case <-t.C():
				pr.flush(false)
			}
		}
	})
	err := g.Wait()
	pr.flush(true)
	return err
}

func (pr *Printer) handle(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
	var w writer.Write
	var err error
	if m.Subject == bus.NewSubjects(pr.p.Config.Bus.Prefix).IncidentsStorm() {
		var s incident.Storm
		if err := incident.Unmarshal(m.Data, &s); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decoding storm event: %w", err))
		}
		w, err = pr.preview.Storm(ctx, &s)
	} else {
		var e incident.Event
		if err := incident.Unmarshal(m.Data, &e); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decoding incident event: %w", err))
		}
		w, err = pr.preview.Event(ctx, &e)
	}
	if err != nil {
		return nil, bus.Permanent(err)
	}
	if err := pr.record(w); err != nil {
		return nil, bus.Permanent(err)
	}
	return nil, nil
}

// record prints w now (a create, or a status write whose spacing ran out)
// or keeps it as its request's pending line.
func (pr *Printer) record(w writer.Write) error {
	if w.Request == nil {
		return nil
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	now := pr.clk.Now()
	if w.Created {
		b, err := yaml.Marshal(w.Request)
		if err != nil {
			return err
		}
		fmt.Fprintf(pr.out, "---\n%s", b)
		pr.entries[w.Request.Name] = &printEntry{lastWrite: now, spacing: pr.interval}
		return nil
	}
	e := pr.entries[w.Request.Name]
	e.pending, e.urgent = statusLine(w.Request), e.urgent || w.Urgent
	if pr.due(e, now) {
		pr.write(e, now)
	}
	return nil
}

// due: e's pending line may be written at now.
func (pr *Printer) due(e *printEntry, now time.Time) bool {
	wait := e.spacing
	if e.urgent {
		wait = pr.interval
	}
	return e.pending != "" && !now.Before(e.lastWrite.Add(wait))
}

// write prints e's pending line and spaces the next one as the coalescer
// does: doubled when this write came within maxInterval of the spacing
// running out, else back to the base interval.
func (pr *Printer) write(e *printEntry, now time.Time) {
	fmt.Fprintln(pr.out, e.pending)
	if now.Sub(e.lastWrite.Add(e.spacing)) <= pr.maxInterval {
		e.spacing = min(2*e.spacing, pr.maxInterval)
	} else {
		e.spacing = pr.interval
	}
	e.lastWrite, e.pending, e.urgent = now, "", false
}

// flush writes the pending lines that are due (all of them when final),
// in name order.
func (pr *Printer) flush(final bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	now := pr.clk.Now()
	names := make([]string, 0, len(pr.entries))
	for n, e := range pr.entries {
		if e.pending != "" && (final || pr.due(e, now)) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		pr.write(pr.entries[n], now)
	}
}

// statusLine is a status write in one comment line.
func statusLine(rr *v1alpha1.RemediationRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s/%s status:", rr.Namespace, rr.Name)
	st := rr.Status
	if st.Signal != nil {
		fmt.Fprintf(&b, " state=%s", st.Signal.State)
	}
	if st.Occurrences != nil {
		fmt.Fprintf(&b, " occurrences=%d", st.Occurrences.Count)
		if st.Occurrences.Flaps > 0 {
			fmt.Fprintf(&b, " flaps=%d", st.Occurrences.Flaps)
		}
	}
	if n := len(st.FoldedIncidents); n > 0 {
		fmt.Fprintf(&b, " folded=%d", n)
	}
	if s := st.Storm; s != nil {
		fmt.Fprintf(&b, " members=%d affected=%d", s.Members, s.AffectedTotal)
		if s.ClosedAt != nil {
			b.WriteString(" closed")
		}
	}
	return b.String()
}
