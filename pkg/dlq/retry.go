package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Outcome says what a retry did with one entry.
type Outcome string

// Outcomes of Retry.
const (
	// Retried: the message was stored again on its subject and its entry
	// removed; its stage handles it as it handled the original.
	Retried Outcome = "retried"
	// AlreadyRetried: an earlier retry stored the message and stopped
	// before removing the entry; the entry is removed now, nothing is
	// stored twice.
	AlreadyRetried Outcome = "already retried"
)

// Result is what Retry did with one entry.
type Result struct {
	Outcome Outcome `json:"outcome"`
	// Seq is where the message is stored now in its stream.
	Seq uint64 `json:"seq"`
}

// RememberedError is Retry's refusal of a message whose id its stream
// still remembers: within the stream's duplicate window JetStream drops a
// message with the id of one it stored, so a republish would be lost.
// Nothing was written; the retry works from Until on.
type RememberedError struct {
	Entry  uint64
	MsgID  string
	Stream string
	Window time.Duration
	Until  time.Time
}

func (e *RememberedError) Error() string {
	return fmt.Sprintf("DLQ entry %d: %s still remembers message id %s for its %s duplicate window; retry after %s",
		e.Entry, e.Stream, e.MsgID, e.Window, e.Until.UTC().Format(time.RFC3339))
}

// Retry republishes e to its original subject, with its original headers
// and message id, into its original stream, then removes it from the DLQ.
//
// The message id is what makes it once and only once: every stage keys
// its work on it (the deduper's redelivery mark, the output ids derived
// from it, the request name derived from those), so whatever part of the
// work the failed attempts did is not done again. JetStream's duplicate
// window makes a second publish of the same id within the window a no-op:
// Retry recognises its own earlier publish (an entry that an interrupted
// retry left behind) by the stored sequence and only removes the entry;
// it refuses, with *RememberedError, while the original itself is still
// remembered, since its republish would be dropped.
func (q *Queue) Retry(ctx context.Context, e *Entry) (Result, error) {
	if err := q.checkTarget(e); err != nil {
		return Result{}, err
	}
	id, err := q.msgID(ctx, e)
	if err != nil {
		return Result{}, err
	}
	m := &nats.Msg{Subject: e.Subject, Data: e.Data, Header: nats.Header{}}
	for k, v := range e.Header {
		m.Header[k] = v
	}
	m.Header.Set(jetstream.MsgIDHeader, id)
	ack, err := q.js.PublishMsg(ctx, m, jetstream.WithExpectStream(e.Stream))
	if err != nil {
		return Result{}, fmt.Errorf("DLQ entry %d: republishing to %s: %w", e.Seq, e.Subject, err)
	}
	res := Result{Outcome: Retried, Seq: ack.Sequence}
	if ack.Duplicate {
		if ack.Sequence == e.StreamSeq {
			return Result{}, q.remembered(ctx, e, id)
		}
		res.Outcome = AlreadyRetried
	}
	if err := q.Delete(ctx, e); err != nil {
		return res, err
	}
	return res, nil
}

// Check tells, without writing anything, whether Retry would republish e
// at now: its original subject is one of the pipeline's, its message id
// is known (filled in e.MsgID when it had to be read from the original),
// and its stream no longer remembers that id (*RememberedError otherwise,
// by now and the original's stored time). A command checks every entry
// before retrying any, so a selection is retried whole or not at all.
func (q *Queue) Check(ctx context.Context, e *Entry, now time.Time) error {
	if err := q.checkTarget(e); err != nil {
		return err
	}
	id, err := q.msgID(ctx, e)
	if err != nil {
		return err
	}
	e.MsgID = id
	if id == positionID(e) {
		// The original had no id of its own: the stream remembers none.
		return nil
	}
	if r := q.remembered(ctx, e, id); r.Until.After(now) {
		return r
	}
	return nil
}

// positionID is the id a stage gives a message stored without one
// (bus.Msg.MsgID): its stream and sequence.
func positionID(e *Entry) string { return e.Stream + ":" + strconv.FormatUint(e.StreamSeq, 10) }

// checkTarget refuses an entry whose original subject is not one the
// pipeline's stages consume, so a retry never publishes anywhere else.
func (q *Queue) checkTarget(e *Entry) error {
	p := q.subj.Prefix() + "."
	ok := strings.HasPrefix(e.Subject, p+"signals.") || strings.HasPrefix(e.Subject, p+"dedup.") ||
		strings.HasPrefix(e.Subject, p+"incidents.")
	if !ok || e.Stream == "" {
		return fmt.Errorf("DLQ entry %d: its original subject %q is not one of pipeline %q's stages; not retried", e.Seq, e.Subject, q.subj.Prefix())
	}
	return nil
}

// msgID is the id e's original was stored under: the one the DLQ
// recorded, else the original's own (read from its stream, for an entry
// dead-lettered before the DLQ recorded ids), else the id its stage saw
// for a message without one.
func (q *Queue) msgID(ctx context.Context, e *Entry) (string, error) {
	if e.MsgID != "" {
		return e.MsgID, nil
	}
	st, err := q.js.Stream(ctx, e.Stream)
	if err != nil {
		return "", fmt.Errorf("DLQ entry %d: looking up its stream %s: %w", e.Seq, e.Stream, err)
	}
	orig, err := st.GetMsg(ctx, e.StreamSeq)
	switch {
	case err == nil && orig.Header.Get(jetstream.MsgIDHeader) != "":
		return orig.Header.Get(jetstream.MsgIDHeader), nil
	case err == nil:
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return "", fmt.Errorf("DLQ entry %d: its message id is not recorded and the original (%s %d) is gone; not retried", e.Seq, e.Stream, e.StreamSeq)
	default:
		return "", fmt.Errorf("DLQ entry %d: reading the original (%s %d): %w", e.Seq, e.Stream, e.StreamSeq, err)
	}
	return positionID(e), nil
}

// remembered builds the refusal for an original still in its stream's
// duplicate window: the window counts from the original's stored time,
// or, when the original is gone (purged: aged out means the window is
// over, as max_age is never shorter), from the entry's own, later time.
func (q *Queue) remembered(ctx context.Context, e *Entry, id string) *RememberedError {
	r := &RememberedError{Entry: e.Seq, MsgID: id, Stream: e.Stream}
	st, err := q.js.Stream(ctx, e.Stream)
	if err != nil {
		return r
	}
	r.Window = st.CachedInfo().Config.Duplicates
	r.Until = e.Time.Add(r.Window)
	if orig, err := st.GetMsg(ctx, e.StreamSeq); err == nil {
		r.Until = orig.Time.Add(r.Window)
	}
	return r
}
