// Package dlq reads, retries and clears a pipeline's dead-letter queue:
// the messages a stage gave up on, each stored on <prefix>.dlq.<stage>
// with the reason and where it came from (DESIGN §1). A retry republishes
// a message to its original subject with its original headers and
// message id, so a message that failed for a transient reason completes
// once and only once; the stage's depth gauge (stormweir_dlq_messages)
// falls as entries are retried or purged.
package dlq

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Entry is one dead-lettered message as the DLQ stream holds it.
type Entry struct {
	// Seq is the entry's sequence in the DLQ stream: the number `dlq
	// show`, `retry` and `purge` take.
	Seq uint64 `json:"seq"`
	// Time is when the stage dead-lettered the message.
	Time time.Time `json:"time"`
	// Stage gave up on the message, for Reason.
	Stage  string `json:"stage"`
	Reason string `json:"reason"`
	// Subject, Stream and StreamSeq say where the original message was
	// stored; a retry republishes it to Subject, into Stream.
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	StreamSeq uint64 `json:"streamSeq"`
	// Deliveries is how often the stage received it before giving up.
	Deliveries uint64 `json:"deliveries"`
	// MsgID is the original message id ("" for an entry dead-lettered
	// before the DLQ recorded it: Retry then reads it from the original).
	MsgID string `json:"msgID,omitempty"`
	// Incident and Fingerprint are the incident (or storm) and the signal
	// fingerprint the message was about, when it says.
	Incident    string `json:"incident,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Header is the original message's headers, without the DLQ's own.
	Header nats.Header `json:"header,omitempty"`
	// Data is the original payload.
	Data []byte `json:"data"`
}

// newEntry reads a message of the DLQ stream; prefix is the pipeline's
// subject prefix, which names the stage when the headers do not.
func newEntry(prefix string, seq uint64, t time.Time, subject string, h nats.Header, data []byte) *Entry {
	e := &Entry{Seq: seq, Time: t, Data: data, Header: nats.Header{}}
	for k, v := range h {
		if !bus.IsDLQHeader(k) && k != jetstream.MsgIDHeader {
			e.Header[k] = v
		}
	}
	e.Stage = h.Get(bus.HeaderDLQStage)
	if e.Stage == "" {
		e.Stage = strings.TrimPrefix(subject, prefix+".dlq.")
	}
	e.Reason = h.Get(bus.HeaderDLQReason)
	e.Subject = h.Get(bus.HeaderDLQSubject)
	e.Stream = h.Get(bus.HeaderDLQStream)
	e.StreamSeq, _ = strconv.ParseUint(h.Get(bus.HeaderDLQSequence), 10, 64)
	e.Deliveries, _ = strconv.ParseUint(h.Get(bus.HeaderDLQDeliveries), 10, 64)
	e.MsgID = h.Get(bus.HeaderDLQMsgID)
	e.Incident = h.Get(bus.HeaderIncident)
	e.Fingerprint = h.Get(bus.HeaderFingerprint)
	if e.Incident == "" || e.Fingerprint == "" {
		// An event names its incident in its body too; a signal has no
		// incident yet, only its fingerprint.
		var body struct {
			IncidentID  string `json:"incidentID"`
			StormID     string `json:"stormID"`
			Fingerprint string `json:"fingerprint"`
		}
		if json.Unmarshal(data, &body) == nil {
			e.Incident = cmp.Or(e.Incident, body.IncidentID, body.StormID)
			e.Fingerprint = cmp.Or(e.Fingerprint, body.Fingerprint)
		}
	}
	return e
}

// Signal decodes the signal the entry is about: the message itself on a
// signals subject, the signal an incident or storm event carries
// otherwise. It fails for a payload that is neither (often the reason
// it was dead-lettered).
func (e *Entry) Signal() (*signal.Signal, error) {
	raw := e.Data
	if !strings.Contains(e.Subject, ".signals.") {
		var ev struct {
			Signal json.RawMessage `json:"signal"`
		}
		if err := json.Unmarshal(e.Data, &ev); err != nil || len(ev.Signal) == 0 {
			return nil, fmt.Errorf("DLQ entry %d: no signal in the %s message", e.Seq, e.Subject)
		}
		raw = ev.Signal
	}
	var sig signal.Signal
	if err := signal.Decode(raw, &sig); err != nil {
		return nil, fmt.Errorf("DLQ entry %d: %w", e.Seq, err)
	}
	return &sig, nil
}
