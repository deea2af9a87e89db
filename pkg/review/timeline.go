package review

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Stages as a timeline names them, in the order their rows of one instant
// are shown.
const (
	StageReceiver   = "receiver"
	StageDeduper    = "deduper"
	StageAggregator = "aggregator"
	StageWriter     = "writer"
	StageDLQ        = "dlq"
)

var stageOrder = map[string]int{StageReceiver: 0, StageDeduper: 1, StageAggregator: 2, StageWriter: 3, StageDLQ: 4}

// Events of a timeline row: what a stage recorded.
const (
	EventSignal     = "signal"            // the receiver stored a signal
	EventRejected   = "rejected"          // the receiver refused a webhook item
	EventIgnored    = "ignored"           // the receiver took a webhook item that is not a signal
	EventNew        = "new"               // the deduper opened an incident
	EventDuplicate  = "duplicate"         // a repeat within the window
	EventResolved   = "resolved"          // the incident was resolved
	EventReopened   = "reopened"          // a resolved incident fired again (a flap)
	EventUndecided  = "no-incident"       // a signal with no incident decision recorded
	EventIndividual = "individual"        // the aggregator gave the incident its own request
	EventMember     = "storm-member"      // the aggregator folded the incident into a storm
	EventStormOpen  = "storm-opened"      // a storm opened
	EventStormUp    = "storm-updated"     // a storm counted more members or occurrences
	EventStormClose = "storm-closed"      // a storm's window closed
	EventCreated    = "request-created"   // the writer created the RemediationRequest
	EventUpdated    = "request-updated"   // the writer wrote the request's status
	EventDead       = "dead-lettered"     // a stage gave up on a message
	EventEnded      = "remediation-ended" // the remediation controller set a terminal phase
)

// Row is one thing a stage recorded about an incident, storm or signal.
type Row struct {
	// Time is when it happened on the stage's clock: the receipt time of
	// the signal decided on, the storm's detection, update or close, the
	// write, the rejection. A dead letter has its stored time.
	Time   time.Time `json:"time"`
	Stage  string    `json:"stage"`
	Event  string    `json:"event"`
	Detail string    `json:"detail"`
	// Evidence is where the row was read: "STREAM#seq".
	Evidence string `json:"evidence"`

	Signal   string `json:"signal,omitempty"`
	Status   string `json:"status,omitempty"`
	Count    int64  `json:"count,omitempty"`
	Flaps    int64  `json:"flaps,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	Storm    string `json:"storm,omitempty"`
	Request  string `json:"request,omitempty"`
	Reason   string `json:"reason,omitempty"`

	seq uint64
}

// Timeline is everything recorded about one incident, one storm, or one
// group of signals that never became an incident.
type Timeline struct {
	// ID is the incident or storm id; for signals without an incident,
	// "fingerprint:<fp>"; for refused webhook items, "rejected".
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Name, Source, Target and Labels describe the opening signal (a
	// storm's representative signal, with the scope as labels).
	Name   string            `json:"name,omitempty"`
	Source string            `json:"source,omitempty"`
	Target string            `json:"target,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Request is the RemediationRequest last written for it.
	Request string `json:"request,omitempty"`
	// Storm is the storm an incident was folded into.
	Storm string `json:"storm,omitempty"`
	// Phase is the terminal phase the remediation controller set, once
	// the writer saw it.
	Phase string `json:"phase,omitempty"`
	Rows  []Row  `json:"rows"`

	environment, envRule, priority, prioRule, fallbackFrom string
	matched                                                bool
}

// Timeline kinds.
const (
	KindIncident   = "incident"
	KindStorm      = "storm"
	KindNoIncident = "no-incident"
	KindRejected   = "rejected"
	KindIgnored    = "ignored"
)

// Replay is a read of a pipeline's streams into timelines.
type Replay struct {
	// Timelines in the order of their first row.
	Timelines []*Timeline
	// Signals and Decisions count the messages read from each stream
	// (selected or not), DeadLetters the DLQ's.
	Signals, Decisions, DeadLetters int
}

// builder collects rows while the streams are read.
type builder struct {
	sel   Selector
	byID  map[string]*Timeline
	order []*Timeline
	// decided maps a decided signal's id to its incident, so the same
	// signal read from the signals stream is not shown twice; ofFP are
	// the incidents of the selected fingerprint.
	decided map[string]string
	ofFP    map[string]bool
	// decisionsFrom is the stored time of the oldest decision kept: a
	// signal older than it lost its decisions to the retention of the
	// decisions stream, not to a failure.
	decisionsFrom time.Time
}

// Read replays the pipeline under prefix: the decisions (incident and
// storm events, audit records), the signals no decision covers, and the
// dead letters, in the selector's range, grouped into timelines and
// filtered by the selector.
func Read(ctx context.Context, js jetstream.JetStream, prefix string, sel Selector, progress Progress) (*Replay, error) {
	if err := CheckStreams(ctx, js, prefix); err != nil {
		return nil, err
	}
	b := &builder{sel: sel, byID: map[string]*Timeline{}, decided: map[string]string{}, ofFP: map[string]bool{}}
	rep := &Replay{}
	streams := bus.ReviewStreams(prefix)
	if st, err := js.Stream(ctx, streams[1]); err == nil {
		if s := st.CachedInfo().State; s.Msgs > 0 {
			b.decisionsFrom = s.FirstTime
		}
	}
	subj := bus.NewSubjects(prefix)
	if err := ReadStream(ctx, js, streams[1], sel, progress, func(m *Msg) error {
		rep.Decisions++
		return b.decision(subj, m)
	}); err != nil {
		return nil, err
	}
	if err := ReadStream(ctx, js, streams[0], sel, progress, func(m *Msg) error {
		rep.Signals++
		return b.signal(m)
	}); err != nil {
		return nil, err
	}
	if err := ReadStream(ctx, js, streams[2], sel, progress, func(m *Msg) error {
		rep.DeadLetters++
		return b.dead(m)
	}); err != nil {
		return nil, err
	}
	rep.Timelines = b.finish()
	return rep, nil
}

// wants reports whether a message of incident id and fingerprint fp can
// belong to a selected timeline, from its headers alone: the common case
// of one incident's timeline decodes nothing else.
func (b *builder) wants(id, fp string) bool {
	s := b.sel
	if s.Incident != "" && id != s.Incident {
		return false
	}
	if s.Fingerprint != "" && fp != s.Fingerprint && !b.ofFP[id] {
		return false
	}
	return true
}

func (b *builder) timeline(id, kind, fp string) *Timeline {
	t := b.byID[id]
	if t == nil {
		t = &Timeline{ID: id, Kind: kind, Fingerprint: fp}
		b.byID[id] = t
		b.order = append(b.order, t)
	}
	if t.Fingerprint == "" {
		t.Fingerprint = fp
	}
	return t
}

func evidence(m *Msg) string { return fmt.Sprintf("%s#%d", m.Stream, m.Seq) }

func (b *builder) decision(subj bus.Subjects, m *Msg) error {
	id, fp := m.header(bus.HeaderIncident), m.header(bus.HeaderFingerprint)
	if b.sel.Fingerprint != "" && fp == b.sel.Fingerprint && id != "" {
		b.ofFP[id] = true
	}
	switch {
	case strings.HasPrefix(m.Subject, subj.Audit("")):
		return b.audit(m)
	case m.Subject == subj.IncidentsStorm():
		if !b.wants(id, fp) {
			return nil
		}
		return b.storm(m)
	}
	if !b.wants(id, fp) {
		return nil
	}
	msgID := m.header(nats.MsgIdHdr)
	var ev incident.Event
	if err := incident.Unmarshal(m.Data, &ev); err != nil {
		return nil // not an event stormweir wrote; nothing to show
	}
	switch {
	case m.Subject == subj.IncidentsOpen():
		t := b.timeline(ev.IncidentID, KindIncident, ev.Fingerprint)
		t.Rows = append(t.Rows, Row{Time: ev.FirstSeen, Stage: StageAggregator, Event: EventIndividual,
			Detail: "its own request (no storm in its scope)", Evidence: evidence(m), Revision: ev.Revision, seq: m.Seq})
		return nil
	case !strings.HasPrefix(msgID, "d:"):
		// An update the aggregator forwarded once routed: the deduper's
		// decision is already on the timeline.
		return nil
	}
	// The deduper's msg-id is "d:" and the signal's (its id), so the
	// signal decided on is known without decoding it.
	sigID := msgID[2:]
	b.decided[sigID] = ev.IncidentID
	t := b.timeline(ev.IncidentID, KindIncident, ev.Fingerprint)
	r := Row{Stage: StageDeduper, Event: string(ev.Decision), Evidence: evidence(m), Signal: sigID,
		Status: string(ev.State), Count: ev.Count, Flaps: ev.Flaps, Revision: ev.Revision, seq: m.Seq}
	// The deduper's time of the decision: the record's last-seen time.
	at := ev.LastSeen
	switch ev.Decision {
	case incident.DecisionNew:
		var sig signal.Signal
		if err := signal.Decode(ev.Signal, &sig); err == nil {
			t.Name, t.Source, t.Target, t.Labels = sig.Name, string(sig.Source), targetString(sig.Target), SignalLabels(&sig)
			t.Rows = append(t.Rows, signalRow(&sig, evidence(m), m.Seq))
		}
		r.Detail = "opened the incident"
	case incident.DecisionOccurrence:
		r.Event = EventDuplicate
		r.Detail = fmt.Sprintf("repeat %d within the window", ev.Count)
	case incident.DecisionResolved:
		at = ev.ResolvedAt
		r.Detail = "the source reported it resolved"
	case incident.DecisionReopened:
		r.Detail = fmt.Sprintf("fired again within the reopen window: flap %d", ev.Flaps)
	}
	r.Time = at
	t.Rows = append(t.Rows, r)
	return nil
}

func signalRow(sig *signal.Signal, ev string, seq uint64) Row {
	return Row{Time: sig.ReceivedAt, Stage: StageReceiver, Event: EventSignal, Evidence: ev, Signal: sig.ID, Status: string(sig.Status),
		Detail: fmt.Sprintf("%s %s %s %s (severity %s)", sig.Source, sig.Name, sig.Status, targetString(sig.Target), sig.Severity), seq: seq}
}

func targetString(t signal.Target) string {
	s := strings.ToLower(t.Kind)
	if s == "" {
		s = "-"
	}
	switch {
	case t.Namespace != "" && t.Name != "":
		return s + " " + t.Namespace + "/" + t.Name
	case t.Name != "":
		return s + " " + t.Name
	case t.Namespace != "":
		return "namespace " + t.Namespace
	}
	return "no target"
}

func (b *builder) storm(m *Msg) error {
	var s incident.Storm
	if err := incident.Unmarshal(m.Data, &s); err != nil {
		return nil
	}
	t := b.timeline(s.StormID, KindStorm, s.Fingerprint)
	if t.Labels == nil {
		t.Labels = map[string]string{}
		for k, v := range s.Scope {
			t.Labels[k] = v
		}
		var sig signal.Signal
		if err := signal.Decode(s.Signal, &sig); err == nil {
			t.Name, t.Source = sig.Name, string(sig.Source)
			for k, v := range SignalLabels(&sig) {
				if _, ok := t.Labels[k]; !ok {
					t.Labels[k] = v
				}
			}
		}
		t.Target = "scope " + FormatScope(s.Scope)
	}
	r := Row{Stage: StageAggregator, Evidence: evidence(m), Revision: s.Revision, Count: s.Occurrences, seq: m.Seq,
		Detail: fmt.Sprintf("%s storm, %d members, %d occurrences, %d resources", s.Type, s.Members, s.Occurrences, s.AffectedTotal)}
	switch s.Phase {
	case incident.StormOpened:
		r.Time, r.Event = s.DetectedAt, EventStormOpen
		r.Detail = fmt.Sprintf("%s storm in scope %s: %d members", s.Type, FormatScope(s.Scope), s.Members)
	case incident.StormUpdated:
		r.Time, r.Event = s.LastSeen, EventStormUp
	case incident.StormClosed:
		r.Time, r.Event = s.ClosedAt, EventStormClose
	}
	t.Rows = append(t.Rows, r)
	return nil
}

// FormatScope writes a scope as sorted key=value pairs.
func FormatScope(scope map[string]string) string {
	keys := make([]string, 0, len(scope))
	for k := range scope {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + scope[k]
	}
	return strings.Join(parts, ",")
}

func (b *builder) audit(m *Msg) error {
	var a incident.Audit
	if err := incident.Unmarshal(m.Data, &a); err != nil {
		return nil
	}
	switch a.Kind {
	case incident.AuditRejected, incident.AuditIgnored:
		if b.sel.Incident != "" || b.sel.Fingerprint != "" {
			return nil
		}
		kind, event := KindRejected, EventRejected
		if a.Kind == incident.AuditIgnored {
			kind, event = KindIgnored, EventIgnored
		}
		t := b.timeline(kind, kind, "")
		name := a.Name
		if name == "" {
			name = "(unnamed)"
		}
		t.Rows = append(t.Rows, Row{Time: a.Time, Stage: StageReceiver, Event: event, Evidence: evidence(m), Reason: a.Reason,
			Detail: fmt.Sprintf("%s item %d %s: %s", a.Source, a.Index, name, a.Reason), seq: m.Seq})
		return nil
	case incident.AuditRouted:
		if !b.wants(a.IncidentID, a.Fingerprint) && !b.wants(a.StormID, "") {
			return nil
		}
		t := b.timeline(a.IncidentID, KindIncident, a.Fingerprint)
		t.Storm = a.StormID
		r := Row{Time: a.Time, Stage: StageAggregator, Event: EventMember, Storm: a.StormID, Evidence: evidence(m), seq: m.Seq,
			Detail: fmt.Sprintf("folded into %s storm %s", a.StormType, a.StormID)}
		if a.Opened {
			r.Detail = fmt.Sprintf("opened %s storm %s and was folded into it", a.StormType, a.StormID)
		}
		t.Rows = append(t.Rows, r)
		return nil
	case incident.AuditEnded:
		if !b.wants(a.IncidentID, a.Fingerprint) {
			return nil
		}
		t := b.timeline(a.IncidentID, KindIncident, a.Fingerprint)
		t.Phase = a.Phase
		t.Rows = append(t.Rows, Row{Time: a.Time, Stage: StageWriter, Event: EventEnded, Request: a.Request, Evidence: evidence(m), seq: m.Seq,
			Detail: fmt.Sprintf("%s reached phase %s: the incident ended, its next firing opens a new one", a.Request, a.Phase)})
		return nil
	case incident.AuditWritten:
		if !b.wants(a.IncidentID, a.Fingerprint) {
			return nil
		}
		kind := KindIncident
		if strings.HasPrefix(a.IncidentID, "s") {
			kind = KindStorm
		}
		t := b.timeline(a.IncidentID, kind, a.Fingerprint)
		t.Request = a.Request
		r := Row{Time: a.Time, Stage: StageWriter, Request: a.Request, Revision: a.Revision, Evidence: evidence(m), seq: m.Seq}
		if a.Operation == incident.WriteCreated {
			r.Event = EventCreated
			t.environment, t.envRule, t.priority, t.prioRule, t.fallbackFrom = a.Environment, a.EnvironmentRule, a.Priority, a.PriorityRule, a.FallbackFrom
			r.Detail = fmt.Sprintf("%s at revision %d: environment %s (%s), priority %s (%s)",
				a.Request, a.Revision, a.Environment, a.EnvironmentRule, a.Priority, a.PriorityRule)
			if a.FallbackFrom != "" {
				r.Detail += fmt.Sprintf("; in the fallback namespace: namespace %s does not exist", a.FallbackFrom)
			}
		} else {
			r.Event = EventUpdated
			r.Detail = fmt.Sprintf("%s status at revision %d", a.Request, a.Revision)
		}
		t.Rows = append(t.Rows, r)
	}
	return nil
}

func (b *builder) signal(m *Msg) error {
	fp := m.header(bus.HeaderFingerprint)
	if b.sel.Incident != "" || (b.sel.Fingerprint != "" && fp != b.sel.Fingerprint) {
		return nil
	}
	// A signal's msg-id is its id: one decided is skipped undecoded.
	if _, ok := b.decided[m.header(nats.MsgIdHdr)]; ok {
		return nil
	}
	var sig signal.Signal
	if err := signal.Decode(m.Data, &sig); err != nil {
		return nil
	}
	t := b.timeline("fingerprint:"+sig.Fingerprint, KindNoIncident, sig.Fingerprint)
	if t.Labels == nil {
		t.Name, t.Source, t.Target, t.Labels = sig.Name, string(sig.Source), targetString(sig.Target), SignalLabels(&sig)
	}
	t.Rows = append(t.Rows, signalRow(&sig, evidence(m), m.Seq))
	r := Row{Time: sig.ReceivedAt, Stage: StageDeduper, Event: EventUndecided, Evidence: evidence(m), Signal: sig.ID, Status: string(sig.Status), seq: m.Seq,
		Detail: "no incident decision recorded: not processed yet, or dead-lettered (see below)"}
	switch {
	case !b.decisionsFrom.IsZero() && m.Stored.Before(b.decisionsFrom):
		r.Detail = fmt.Sprintf("its decisions are no longer kept: the decisions stream starts at %s (bus.archive.incidents.max_age, max_bytes)", formatTime(b.decisionsFrom))
	case !sig.Firing():
		r.Detail = "resolved signal with no open incident: counted, never a request"
	}
	t.Rows = append(t.Rows, r)
	return nil
}

func (b *builder) dead(m *Msg) error {
	id, fp := m.header(bus.HeaderIncident), m.header(bus.HeaderFingerprint)
	stage, reason := m.header(bus.HeaderDLQStage), m.header(bus.HeaderDLQReason)
	key := id
	kind := KindIncident
	if key == "" {
		var head signal.Head
		if err := signal.DecodeHead(m.Data, &head); err == nil && head.Fingerprint != "" {
			fp = head.Fingerprint
			if inc, ok := b.decided[head.ID]; ok {
				key = inc
			}
		}
	}
	if key == "" {
		if fp == "" {
			return nil
		}
		key, kind = "fingerprint:"+fp, KindNoIncident
	}
	if !b.wants(id, fp) {
		return nil
	}
	t := b.timeline(key, kind, fp)
	t.Rows = append(t.Rows, Row{Time: m.Stored, Stage: StageDLQ, Event: EventDead, Evidence: evidence(m), Reason: reason, seq: m.Seq,
		Detail: fmt.Sprintf("%s gave up on %s#%s: %s", cmp.Or(stage, "a stage"), m.header(bus.HeaderDLQStream), m.header(bus.HeaderDLQSequence), reason)})
	return nil
}

// finish sorts each timeline's rows and keeps the selected timelines.
func (b *builder) finish() []*Timeline {
	var out []*Timeline
	for _, t := range b.order {
		if !b.selected(t) {
			continue
		}
		slices.SortStableFunc(t.Rows, func(x, y Row) int {
			// Revisions order one stage's rows of one instant: a stage
			// publishes concurrently, so the stream's order may not be
			// the decisions' order.
			return cmp.Or(x.Time.Compare(y.Time), cmp.Compare(stageOrder[x.Stage], stageOrder[y.Stage]), cmp.Compare(x.Revision, y.Revision),
				cmp.Compare(x.Evidence[:strings.IndexByte(x.Evidence, '#')], y.Evidence[:strings.IndexByte(y.Evidence, '#')]), cmp.Compare(x.seq, y.seq))
		})
		out = append(out, t)
	}
	slices.SortStableFunc(out, func(x, y *Timeline) int {
		return cmp.Or(x.first().Compare(y.first()), cmp.Compare(x.ID, y.ID))
	})
	return out
}

func (t *Timeline) first() time.Time {
	if len(t.Rows) == 0 {
		return time.Time{}
	}
	return t.Rows[0].Time
}

func (b *builder) selected(t *Timeline) bool {
	s := b.sel
	if len(t.Rows) == 0 {
		return false
	}
	if s.Incident != "" && t.ID != s.Incident {
		return false
	}
	if s.Fingerprint != "" && t.Fingerprint != s.Fingerprint && !b.ofFP[t.ID] {
		return false
	}
	if len(s.Matchers) > 0 && (t.Labels == nil || !s.MatchLabels(t.Labels)) {
		return false
	}
	return true
}
