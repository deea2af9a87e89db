package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
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
	// HeaderDLQMsgID is the original message's Nats-Msg-Id (or, when it
	// had none, the id its handler saw: Msg.MsgID), so a retry from the
	// DLQ republishes under the id the stages already keyed their work
	// on, and completes once.
	HeaderDLQMsgID = "Stormweir-Dlq-Msg-Id"
)

// IsDLQHeader reports whether k is one of the headers dead-lettering
// adds, which a retry from the DLQ removes again.
func IsDLQHeader(k string) bool {
	switch k {
	case HeaderDLQReason, HeaderDLQStage, HeaderDLQSubject, HeaderDLQStream, HeaderDLQSequence, HeaderDLQDeliveries, HeaderDLQMsgID:
		return true
	}
	return false
}

// Output is one message a stage publishes.
type Output struct {
	Subject string
	Data    []byte
	// MsgID is the idempotency key; JetStream drops a second publish of
	// the same id within the stream's duplicate window. Handlers derive it
	// from their input so a redelivered input republishes the same ids.
	// Publish adds it to Header as Nats-Msg-Id.
	MsgID  string
	Header nats.Header
}

// Size is the number of bytes o takes against the server's max payload:
// its data and its headers as the client encodes them, the Nats-Msg-Id
// that Publish adds included. A message over the max payload is refused
// by the client before it is sent, whatever the retry, so a caller that
// must not fail a whole batch for it checks Size first.
func (o *Output) Size() int {
	n := len(o.Data)
	hdr := 0
	for k, vs := range o.Header {
		if k == jetstream.MsgIDHeader && o.MsgID != "" {
			continue
		}
		for _, v := range vs {
			hdr += len(k) + len(v) + len(": \r\n")
		}
	}
	if o.MsgID != "" {
		hdr += len(jetstream.MsgIDHeader) + len(o.MsgID) + len(": \r\n")
	}
	if hdr > 0 {
		hdr += len("NATS/1.0\r\n") + len("\r\n")
	}
	return n + hdr
}

// PublishResult summarises one Publish call.
type PublishResult struct {
	// Duplicates is how many outputs JetStream recognised by msg-id as
	// already stored.
	Duplicates int
}

// MaxPendingAcks bounds the acknowledgements one Publisher waits for at
// once; a Publish that would exceed it waits for room (within its
// timeout) instead of piling more onto a slow server.
const MaxPendingAcks = 16384

// Publisher publishes batches asynchronously and waits for every
// acknowledgement: a synchronous publish per message would cap a stage near
// 20k msgs/s on two cores (DESIGN §10).
//
// It publishes on the core connection with one reply subject per Publish
// call, so a batch is one entry to register and one channel to wait on,
// and a PubAck is recognised without a JSON decode. jetstream's
// PublishMsgAsync kept a future, a map entry, a reply subject and a
// reflective decode per message: about a third of the receiver's CPU per
// alert went to publishing.
type Publisher struct {
	nc      *nats.Conn
	timeout time.Duration
	// slots holds a token per acknowledgement awaited (MaxPendingAcks).
	slots chan struct{}

	mu sync.Mutex
	// prefix is "<inbox>." once the reply subscription exists.
	prefix  string
	next    uint64
	batches map[string]*batch
	// flights maps an output in flight (subject and msg-id) to the batch
	// that sent it, until that batch's call returns: a concurrent call
	// publishing the same output waits for it instead of sending it
	// again. Stages coalesce their outputs under one msg-id (the
	// deduper's events of one incident decided together), so many
	// handlers publishing one event cost one message.
	flights map[flightKey]*batch
	// sub, status and watched are the reply subscription, the connection
	// status listener and the end of the goroutine that watches it, set
	// with prefix; Close releases them.
	sub     *nats.Subscription
	status  chan nats.Status
	watched chan struct{}
	closed  bool
}

// flightKey names an output in flight: JetStream deduplicates msg-ids
// per stream, and the subject decides the stream.
type flightKey struct{ subject, msgID string }

// batch is one Publish call's outputs in flight; every field is guarded by
// Publisher.mu.
type batch struct {
	reply string
	// sent counts messages handed to the connection, acked the replies
	// received while registered; the difference holds slots.
	sent, acked int
	// pending counts acknowledgements still awaited; done closes when it
	// reaches zero.
	pending int
	dups    int
	err     error
	done    chan struct{}
	// flights are the outputs (subject and msg-id) this batch sent and
	// registered in Publisher.flights; joined the batches whose publish
	// of one of this call's outputs it waits for instead of sending it.
	flights []flightKey
	joined  []*batch
}

// NewPublisher returns a Publisher that waits at most timeout for acks.
func NewPublisher(js jetstream.JetStream, timeout time.Duration) *Publisher {
	return &Publisher{nc: js.Conn(), timeout: timeout, slots: make(chan struct{}, MaxPendingAcks), batches: map[string]*batch{}, flights: map[flightKey]*batch{}}
}

// MaxPayload is the largest message (Output.Size) the connected server
// accepts; it follows the server the connection is on.
func (p *Publisher) MaxPayload() int64 { return p.nc.MaxPayload() }

// ErrPublish wraps every failure to get an output acknowledged; it is
// always transient (the bus is away or slow).
var ErrPublish = errors.New("publish not acknowledged")

// errClosed is why a Publish on a closed Publisher fails.
var errClosed = errors.New("publisher closed")

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
	b, err := p.register(len(outs))
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrPublish, err)
	}
	defer p.unregister(b)
	// One Msg serves every output: the connection copies it into its
	// buffer before PublishMsg returns.
	m := nats.Msg{Reply: b.reply}
	for i := range outs {
		o := &outs[i]
		var flight flightKey
		if o.MsgID != "" {
			flight = flightKey{o.Subject, o.MsgID}
			p.mu.Lock()
			if f := p.flights[flight]; f != nil {
				// Sent already by a call still waiting for its ack:
				// wait for that one instead of sending it again.
				b.joined = append(b.joined, f)
				p.settle(b, 1)
				p.mu.Unlock()
				continue
			}
			p.mu.Unlock()
		}
		// Under a flood the window fills; wait for room (bounded by the
		// publish timeout) rather than failing the request.
		if err := p.acquire(ctx); err != nil {
			p.abandon(b, len(outs)-i, fmt.Errorf("%w: waiting to publish to %s: %w", ErrPublish, o.Subject, err))
			break
		}
		m.Subject, m.Data, m.Header = o.Subject, o.Data, o.Header
		if o.MsgID != "" {
			if m.Header == nil {
				m.Header = nats.Header{}
			}
			m.Header[jetstream.MsgIDHeader] = []string{o.MsgID}
		}
		p.mu.Lock()
		// Counted before it goes out: its ack may come back first.
		b.sent++
		p.mu.Unlock()
		if err := p.nc.PublishMsg(&m); err != nil {
			p.mu.Lock()
			b.sent--
			p.mu.Unlock()
			<-p.slots
			p.abandon(b, len(outs)-i, fmt.Errorf("%w: publishing to %s: %w", ErrPublish, o.Subject, err))
			break
		}
		if o.MsgID != "" {
			// Only once it is on the connection: a call that joins it
			// sends what follows after it, so every call's outputs are
			// stored in its order.
			p.mu.Lock()
			if p.flights[flight] == nil {
				p.flights[flight] = b
				b.flights = append(b.flights, flight)
			}
			p.mu.Unlock()
		}
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		p.abandon(b, -1, fmt.Errorf("%w: waiting for acks: %w", ErrPublish, ctx.Err()))
	}
	p.mu.Lock()
	res.Duplicates, err = b.dups+len(b.joined), b.err
	p.mu.Unlock()
	if err != nil {
		return res, err
	}
	// An output joined to another call's publish is stored once that
	// call's acknowledgements are in; any failure there fails this call
	// too, and its retry is absorbed by msg-id.
	for _, f := range b.joined {
		if f == b {
			continue
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return res, fmt.Errorf("%w: waiting for the acks of a publish of the same msg-id: %w", ErrPublish, ctx.Err())
		}
		p.mu.Lock()
		err = f.err
		p.mu.Unlock()
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// register subscribes to the reply subjects on first use and returns a new
// batch expecting n acknowledgements.
func (p *Publisher) register(n int) (*batch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errClosed
	}
	if p.prefix == "" {
		prefix := p.nc.NewInbox() + "."
		sub, err := p.nc.Subscribe(prefix+"*", p.onReply)
		if err != nil {
			return nil, fmt.Errorf("subscribing to publish acknowledgements: %w", err)
		}
		// Acks are bounded by the slots; never drop one as a slow consumer.
		_ = sub.SetPendingLimits(-1, -1)
		p.sub, p.status, p.watched = sub, p.nc.StatusChanged(nats.RECONNECTING, nats.CLOSED), make(chan struct{})
		go p.failOnDisconnect(p.status, p.watched)
		p.prefix = prefix
	}
	p.next++
	b := &batch{reply: p.prefix + strconv.FormatUint(p.next, 36), pending: n, done: make(chan struct{})}
	p.batches[b.reply[len(p.prefix):]] = b
	return b, nil
}

// unregister forgets b and frees the slots of acks it no longer awaits;
// a late ack for it is ignored.
func (p *Publisher) unregister(b *batch) {
	p.mu.Lock()
	delete(p.batches, b.reply[len(p.prefix):])
	for _, f := range b.flights {
		if p.flights[f] == b {
			delete(p.flights, f)
		}
	}
	free := b.sent - b.acked
	b.sent = b.acked
	p.mu.Unlock()
	for range free {
		<-p.slots
	}
}

// abandon stops b from waiting for its unsent outputs (with unsent -1,
// for anything more), recording err if it is the first.
func (p *Publisher) abandon(b *batch, unsent int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
	if unsent < 0 {
		unsent = b.pending
	}
	p.settle(b, unsent)
}

// settle counts n acknowledgements of b as no longer awaited; p.mu held.
func (p *Publisher) settle(b *batch, n int) {
	if b.pending <= 0 {
		return
	}
	b.pending -= n
	if b.pending <= 0 {
		close(b.done)
	}
}

func (p *Publisher) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// onReply records one JetStream reply to a batch's reply subject.
func (p *Publisher) onReply(m *nats.Msg) {
	dup, err := parseAck(m)
	p.mu.Lock()
	if len(m.Subject) <= len(p.prefix) {
		p.mu.Unlock()
		return
	}
	b := p.batches[m.Subject[len(p.prefix):]]
	if b == nil || b.acked >= b.sent {
		p.mu.Unlock()
		return
	}
	b.acked++
	if dup {
		b.dups++
	}
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("%w: %w", ErrPublish, err)
	}
	p.settle(b, 1)
	p.mu.Unlock()
	<-p.slots
}

// failOnDisconnect ends every wait when the connection drops: replies to
// what was in flight will not come, and the caller's retry (a 503, a Nak)
// is absorbed by msg-id deduplication if the first attempt was stored.
func (p *Publisher) failOnDisconnect(status chan nats.Status, watched chan struct{}) {
	defer close(watched)
	for st := range status {
		p.mu.Lock()
		for _, b := range p.batches {
			if b.err == nil {
				b.err = fmt.Errorf("%w: %w", ErrPublish, nats.ErrDisconnected)
			}
			p.settle(b, b.pending)
		}
		p.mu.Unlock()
		if st == nats.CLOSED {
			return
		}
	}
}

// Close ends every wait in flight with an error, releases the reply
// subscription and stops the goroutine that watches the connection; a
// Publish after Close fails. The process that owns the Publisher closes it
// before its connection, once its stages have stopped.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, b := range p.batches {
		if b.err == nil {
			b.err = fmt.Errorf("%w: %w", ErrPublish, errClosed)
		}
		p.settle(b, b.pending)
	}
	sub, status, watched := p.sub, p.status, p.watched
	p.mu.Unlock()
	if sub == nil {
		return
	}
	_ = sub.Unsubscribe()
	// Closing the listener ends failOnDisconnect's range; wait for it so
	// no goroutine outlives its owner.
	p.nc.RemoveStatusListener(status)
	<-watched
}

// ackPrefix starts every PubAck JetStream sends.
var ackPrefix = []byte(`{"stream":`)

// parseAck reads a JetStream publish reply: whether it acknowledged a
// duplicate, or the error it reports. A plain PubAck is recognised by its
// shape; anything else is decoded in full.
func parseAck(m *nats.Msg) (duplicate bool, err error) {
	if len(m.Data) == 0 {
		if st := m.Header.Get("Status"); st == "503" {
			return false, jetstream.ErrNoStreamResponse
		} else if st != "" {
			return false, fmt.Errorf("jetstream replied with status %s %s", st, m.Header.Get("Description"))
		}
		return false, jetstream.ErrInvalidJSAck
	}
	if bytes.HasPrefix(m.Data, ackPrefix) && !bytes.Contains(m.Data, []byte(`"error"`)) {
		return ackDuplicate(m.Data), nil
	}
	var r struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return false, r.Error
	}
	if r.Stream == "" {
		return false, jetstream.ErrInvalidJSAck
	}
	return r.Duplicate, nil
}

// ackDuplicate reports whether a PubAck says "duplicate": true (the server
// writes it with and without the space).
func ackDuplicate(b []byte) bool {
	_, rest, ok := bytes.Cut(b, []byte(`"duplicate":`))
	return ok && bytes.HasPrefix(bytes.TrimLeft(rest, " "), []byte("true"))
}
