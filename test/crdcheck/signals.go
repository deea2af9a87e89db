package crdcheck

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/storm"
	"github.com/stormweir/stormweir/pkg/writer"
)

// Signals checks that signals can be written: the RemediationRequests the
// writer would create for a signal, as an individual incident and as the
// signal that opens a rate or a pattern storm (writer.Preview, with the
// default configuration), pass the CRD's validation. It is not safe for
// concurrent use.
type Signals struct {
	crd    *Validator
	cfg    config.Writer
	scoper *storm.Scoper
	// valid holds the requests (as JSON) already found valid: a fuzzer's
	// mutations mostly change nothing a request carries (spacing, a
	// header field, a link), and a validation costs about ten decodes.
	valid map[string]struct{}
}

// maxMemo bounds the memo of valid requests; it starts over when full.
const maxMemo = 1 << 14

// NewSignals returns a Signals checker against the generated CRD.
func NewSignals() (*Signals, error) {
	crd, err := RemediationRequests()
	if err != nil {
		return nil, err
	}
	def := config.Default()
	return &Signals{crd: crd, cfg: def.Writer, scoper: storm.NewScoper(def.Aggregator.Scope), valid: map[string]struct{}{}}, nil
}

// Check returns why a request built from s would be refused by the API
// server, nil when every one would be written.
func (c *Signals) Check(s *signal.Signal) error {
	ctx := context.Background()
	enc, err := signal.Encode(s)
	if err != nil {
		return fmt.Errorf("encoding the signal: %w", err)
	}
	// A fresh preview per signal: each one's request is a create, never
	// folded into an earlier signal's.
	p, err := writer.NewPreview(c.cfg)
	if err != nil {
		return err
	}
	id := record.IncidentID(s.Fingerprint, s.ID)
	e := &incident.Event{
		Decision: incident.DecisionNew, IncidentID: id, Fingerprint: s.Fingerprint, Revision: 1,
		State: incident.StateFiring, Count: 1, FirstSeen: s.ReceivedAt, LastSeen: s.ReceivedAt, Signal: enc,
	}
	if !s.Firing() {
		e.State, e.ResolvedAt = incident.StateResolved, s.ReceivedAt
	}
	w, err := p.Event(ctx, e)
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	if err := c.validate(w, "the request"); err != nil {
		return err
	}
	for _, sc := range []struct {
		typ   incident.StormType
		scope storm.Scope
	}{{incident.StormRate, c.scoper.Rate(s)}, {incident.StormPattern, c.scoper.Pattern(s)}} {
		st := &incident.Storm{
			Phase: incident.StormOpened, StormID: sc.scope.StormID(id), Fingerprint: sc.scope.Hash,
			Scope: sc.scope.Values, Type: sc.typ, Revision: 1, DetectedAt: s.ReceivedAt, LastSeen: s.ReceivedAt,
			Members: 1, Occurrences: 1, Signal: enc,
		}
		if !s.Target.IsZero() {
			st.Affected, st.AffectedTotal = []signal.Target{s.Target}, 1
		}
		w, err := p.Storm(ctx, st)
		if err != nil {
			return fmt.Errorf("building the %s storm's request: %w", sc.typ, err)
		}
		if err := c.validate(w, "the "+string(sc.typ)+" storm's request"); err != nil {
			return err
		}
	}
	return nil
}

func (c *Signals) validate(w writer.Write, what string) error {
	if w.Request == nil || !w.Created {
		return fmt.Errorf("%s: the writer would create nothing", what)
	}
	data, err := json.Marshal(w.Request)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, ok := c.valid[string(data)]; ok {
		return nil
	}
	if err := c.crd.ValidateJSON(data); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(c.valid) == maxMemo {
		clear(c.valid)
	}
	c.valid[string(data)] = struct{}{}
	return nil
}
