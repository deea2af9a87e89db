// Package redrive re-publishes recorded signals into another pipeline (a
// staging one, under another bus prefix, on the same NATS or another),
// so that a fixed version can be tried on last night's storm: `stormweir
// replay --into PREFIX [--to URL] [--rate N]`.
//
// Each signal goes to the target's signals subject of its source, with
// its recorded bytes and headers, under a message id scoped to the
// re-drive ("replay:<id>:<original id>"): the target's stages key their
// work on it, so the signals are new to the target however often they
// were sent before under another re-drive, while a re-drive interrupted
// and run again with the same id stores and counts each signal once.
package redrive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
)

// HeaderReplay names the re-drive a signal came from, and HeaderReplayOf
// where it was recorded ("STREAM#seq"), so the target's review shows it.
const (
	HeaderReplay   = "Stormweir-Replay"
	HeaderReplayOf = "Stormweir-Replay-Of"
)

// batchSize is how many signals an unthrottled re-drive publishes per
// wait for acknowledgements: one round trip per batch, not per signal.
const batchSize = 256

// Options say where and how fast to re-drive.
type Options struct {
	// Prefix is the target pipeline's bus prefix.
	Prefix string
	// ID scopes the message ids; NewID makes a fresh one.
	ID string
	// Rate is the most signals per second; 0 sends as fast as the target
	// acknowledges.
	Rate float64
	// PublishTimeout bounds the wait for the target's acknowledgements.
	PublishTimeout time.Duration
}

// Redriver publishes signals into the target pipeline.
type Redriver struct {
	o       Options
	subj    bus.Subjects
	pub     *bus.Publisher
	lim     *rate.Limiter
	pending []bus.Output
	stored  int
	dups    int
}

// NewID returns a fresh re-drive id: the time and a random suffix, so it
// sorts and reads as when it ran.
func NewID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// New checks that the target pipeline exists on js (its streams: it is
// started, and its writer made them) and returns a Redriver for it.
// Nothing is published until Send.
func New(ctx context.Context, js jetstream.JetStream, o Options) (*Redriver, error) {
	if o.Prefix == "" || strings.ContainsAny(o.Prefix, "*> \t") {
		return nil, fmt.Errorf("--into %q: not a bus prefix", o.Prefix)
	}
	if o.ID == "" || strings.ContainsAny(o.ID, " \t\r\n") {
		return nil, fmt.Errorf("re-drive id %q: must be one word", o.ID)
	}
	if o.Rate < 0 {
		return nil, fmt.Errorf("--rate %g: must be positive (or 0 for as fast as the target takes them)", o.Rate)
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 5 * time.Second
	}
	err := bus.CheckStreams(ctx, js, config.Bus{Prefix: o.Prefix})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("no pipeline under prefix %q there (stream %s is missing): start it first", o.Prefix, bus.NewSubjects(o.Prefix).StreamName(bus.StreamSignals))
	}
	if err != nil {
		return nil, fmt.Errorf("looking for the pipeline under prefix %q: %w", o.Prefix, err)
	}
	r := &Redriver{o: o, subj: bus.NewSubjects(o.Prefix), pub: bus.NewPublisher(js, o.PublishTimeout)}
	if o.Rate > 0 {
		r.lim = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	return r, nil
}

// MsgID is the message id a signal recorded under id gets in re-drive
// replay.
func MsgID(replay, id string) string { return "replay:" + replay + ":" + id }

// Send re-publishes one recorded signal: subject is where it was recorded
// (<prefix>.signals.<source>), data and header as stored, at where it
// was ("STREAM#seq"). Unthrottled, signals are sent in batches: Flush
// sends the rest.
func (r *Redriver) Send(ctx context.Context, subject string, data []byte, header nats.Header, at string) error {
	_, src, ok := strings.Cut(subject, ".signals.")
	if !ok || src == "" {
		return fmt.Errorf("%s: %s is not a signals subject", at, subject)
	}
	var head signal.Head
	if err := signal.DecodeHead(data, &head); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	id := header.Get(jetstream.MsgIDHeader)
	if id == "" {
		id = head.ID
	}
	if id == "" {
		id = at
	}
	h := make(nats.Header, len(header)+3)
	for k, v := range header {
		// JetStream's own headers are not the signal's: the message id is
		// the re-drive's, and the server refuses a publish carrying the
		// Nats-Stream-Source the archive added when it sourced the signal.
		if !strings.HasPrefix(k, "Nats-") {
			h[k] = v
		}
	}
	h.Set(HeaderReplay, r.o.ID)
	h.Set(HeaderReplayOf, at)
	// The target received it now: its latency metrics measure the target.
	h.Set(bus.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	r.pending = append(r.pending, bus.Output{Subject: r.subj.Signals(signal.Source(src)), Data: data, MsgID: MsgID(r.o.ID, id), Header: h})
	if r.lim != nil {
		if err := r.lim.Wait(ctx); err != nil {
			return err
		}
		return r.Flush(ctx)
	}
	if len(r.pending) >= batchSize {
		return r.Flush(ctx)
	}
	return nil
}

// Flush publishes what Send buffered and waits until the target stored
// it.
func (r *Redriver) Flush(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	res, err := r.pub.Publish(ctx, r.pending...)
	if err != nil {
		return fmt.Errorf("publishing into %q: %w", r.o.Prefix, err)
	}
	r.stored += len(r.pending) - res.Duplicates
	r.dups += res.Duplicates
	r.pending = r.pending[:0]
	return nil
}

// Sent reports how many signals the target stored, and how many it
// already had under this re-drive's id (an interrupted re-drive run
// again).
func (r *Redriver) Sent() (stored, duplicates int) { return r.stored, r.dups }

// Close releases the publisher; call it after the last Flush.
func (r *Redriver) Close() { r.pub.Close() }
