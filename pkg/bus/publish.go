package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names stormweir sets on every message it publishes.
const (
	HeaderFingerprint = "Stormweir-Fingerprint"
	HeaderSource      = "Stormweir-Source"
	HeaderIncident    = "Stormweir-Incident"
	// HeaderReceivedAt is the receipt time at the receiver (RFC 3339 nano),
	// carried end to end to measure receipt-to-CR latency.
	HeaderReceivedAt = "Stormweir-Received-At"
	// HeaderTraceparent is the W3C trace context, carried from the HTTP
	// request through every hop.
	HeaderTraceparent = "traceparent"
	// DLQ headers say where a dead-lettered message came from and why.
	HeaderDLQReason     = "Stormweir-Dlq-Reason"
	HeaderDLQStage      = "Stormweir-Dlq-Stage"
	HeaderDLQSubject    = "Stormweir-Dlq-Subject"
	HeaderDLQStream     = "Stormweir-Dlq-Stream"
	HeaderDLQSequence   = "Stormweir-Dlq-Sequence"
	HeaderDLQDeliveries = "Stormweir-Dlq-Deliveries"
)

// Output is one message a stage publishes.
type Output struct {
	Subject string
	Data    []byte
	// MsgID is the idempotency key; JetStream drops a second publish of
	// the same id within the stream's duplicate window. Handlers derive it
	// from their input so a redelivered input republishes the same ids.
	MsgID  string
	Header nats.Header
}

// PublishResult summarises one Publish call.
type PublishResult struct {
	// Duplicates is how many outputs JetStream recognised by msg-id as
	// already stored.
	Duplicates int
}

// Publisher publishes batches asynchronously and waits for every
// acknowledgement: a synchronous publish per message would cap a stage near
// 20k msgs/s on two cores (DESIGN §10).
type Publisher struct {
	js      jetstream.JetStream
	timeout time.Duration
}

// NewPublisher returns a Publisher that waits at most timeout for acks.
func NewPublisher(js jetstream.JetStream, timeout time.Duration) *Publisher {
	return &Publisher{js: js, timeout: timeout}
}

// ErrPublish wraps every failure to get an output acknowledged; it is
// always transient (the bus is away or slow).
var ErrPublish = errors.New("publish not acknowledged")

// Publish sends outs and returns once JetStream has acknowledged all of
// them, or an error wrapping ErrPublish when any was not. Callers may only
// report success (202, ack of an input) after a nil error.
func (p *Publisher) Publish(ctx context.Context, outs ...Output) (PublishResult, error) {
	var res PublishResult
	if len(outs) == 0 {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(outs))
	var firstErr error
	for i := range outs {
		o := &outs[i]
		m := &nats.Msg{Subject: o.Subject, Data: o.Data, Header: o.Header}
		if m.Header == nil {
			m.Header = nats.Header{}
		}
		if o.MsgID != "" {
			m.Header.Set(jetstream.MsgIDHeader, o.MsgID)
		}
		// Under a flood the async window fills; wait for room (bounded by
		// the publish timeout) rather than failing the request.
		f, err := p.js.PublishMsgAsync(m, jetstream.WithStallWait(p.timeout))
		if err != nil {
			firstErr = fmt.Errorf("%w: publishing to %s: %v", ErrPublish, o.Subject, err)
			break
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				res.Duplicates++
			}
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: %s: %v", ErrPublish, f.Msg().Subject, err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: waiting for acks: %v", ErrPublish, ctx.Err())
			}
		}
	}
	return res, firstErr
}
