package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/review"
)

// Filter selects DLQ entries: the selectors every command reading the
// streams shares, the stages whose DLQ to read, and entries named by
// sequence. Its zero value selects every entry.
type Filter struct {
	review.Selector
	// Stages limits the entries to these stages' DLQs (every stage when
	// empty).
	Stages []string
	// Seqs names entries by their DLQ sequence (any when empty).
	Seqs []uint64
}

// IsZero reports whether f selects every entry.
func (f Filter) IsZero() bool { return f.Selector.IsZero() && len(f.Stages) == 0 && len(f.Seqs) == 0 }

// Match reports whether f selects e. Label matchers read the signal the
// entry carries; an entry without a readable signal matches none.
func (f Filter) Match(e *Entry) bool {
	if len(f.Seqs) > 0 && !slices.Contains(f.Seqs, e.Seq) ||
		len(f.Stages) > 0 && !slices.Contains(f.Stages, e.Stage) ||
		!f.MatchTime(e.Time) || !f.MatchIncident(e.Incident, e.Fingerprint) {
		return false
	}
	if len(f.Matchers) == 0 {
		return true
	}
	sig, err := e.Signal()
	return err == nil && f.MatchLabels(review.SignalLabels(sig))
}

// Queue is one pipeline's DLQ stream.
type Queue struct {
	js     jetstream.JetStream
	subj   bus.Subjects
	stream jetstream.Stream
}

// ErrNotDLQ is returned by Open for a stream that is not a stormweir DLQ.
var ErrNotDLQ = errors.New("not a stormweir DLQ stream")

// Open finds the DLQ stream of the pipeline with subject prefix, and
// checks that it is one: a stream of that name holding other subjects is
// someone else's, and nothing is read from it or written to it.
func Open(ctx context.Context, js jetstream.JetStream, prefix string) (*Queue, error) {
	subj := bus.NewSubjects(prefix)
	name := subj.StreamName(bus.StreamDLQ)
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("no stream %s on the server: is bus.prefix %q the pipeline's?", name, prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", name, err)
	}
	if got := st.CachedInfo().Config.Subjects; !slices.Equal(got, []string{subj.AllDLQ()}) {
		return nil, fmt.Errorf("stream %s holds %s, not %s: %w", name, strings.Join(got, ","), subj.AllDLQ(), ErrNotDLQ)
	}
	return &Queue{js: js, subj: subj, stream: st}, nil
}

// Stream returns the DLQ stream's name.
func (q *Queue) Stream() string { return q.stream.CachedInfo().Config.Name }

// Scan calls fn with every entry f selects, oldest first, and returns
// the last sequence of the stream it looked at (0 for an empty DLQ).
// Entries dead-lettered while it runs are left for the next scan. It
// reads with an ordered ephemeral consumer (or, for entries named by
// sequence, one direct read each), so memory stays flat in the DLQ's size
// and nothing is left on the server.
func (q *Queue) Scan(ctx context.Context, f Filter, fn func(*Entry) error) (uint64, error) {
	if len(f.Seqs) > 0 {
		return q.scanSeqs(ctx, f, fn)
	}
	info, err := q.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", q.Stream(), err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return last, nil
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{q.subj.AllDLQ()}}
	if len(f.Stages) > 0 {
		cc.FilterSubjects = nil
		for _, s := range f.Stages {
			cc.FilterSubjects = append(cc.FilterSubjects, q.subj.DLQ(s))
		}
	}
	if !f.Since.IsZero() {
		since := f.Since
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	oc, release, err := bus.OpenReader(ctx, q.stream, cc)
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", q.Stream(), err)
	}
	defer release()
	ci, err := oc.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading stream %s: %w", q.Stream(), err)
	}
	for pending := ci.NumPending; pending > 0; {
		batch, err := oc.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, fmt.Errorf("reading stream %s: %w", q.Stream(), err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return 0, fmt.Errorf("reading stream %s: %w", q.Stream(), err)
			}
			pending = md.NumPending
			if md.Sequence.Stream > last {
				// Dead-lettered after the scan started.
				return last, nil
			}
			if !f.Until.IsZero() && !md.Timestamp.Before(f.Until) {
				return last, nil
			}
			e := newEntry(q.subj.Prefix(), md.Sequence.Stream, md.Timestamp, m.Subject(), m.Headers(), m.Data())
			if f.Match(e) {
				if err := fn(e); err != nil {
					return last, err
				}
			}
			if pending == 0 {
				break
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("reading stream %s: %w", q.Stream(), err)
		}
		if n == 0 {
			// Purged or aged out while it was read.
			break
		}
	}
	return last, nil
}

// scanSeqs reads entries named by sequence; a sequence the DLQ does not
// hold is an error naming it.
func (q *Queue) scanSeqs(ctx context.Context, f Filter, fn func(*Entry) error) (uint64, error) {
	var last uint64
	for _, seq := range f.Seqs {
		e, err := q.Get(ctx, seq)
		if err != nil {
			return 0, err
		}
		last = max(last, seq)
		if f.Match(e) {
			if err := fn(e); err != nil {
				return last, err
			}
		}
	}
	return last, nil
}

// ErrNoEntry is returned for a sequence the DLQ does not hold.
var ErrNoEntry = errors.New("no such DLQ entry")

// Get reads the entry at seq.
func (q *Queue) Get(ctx context.Context, seq uint64) (*Entry, error) {
	m, err := q.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w %d in %s", ErrNoEntry, seq, q.Stream())
	}
	if err != nil {
		return nil, fmt.Errorf("reading DLQ entry %d: %w", seq, err)
	}
	if !strings.HasPrefix(m.Subject, q.subj.Prefix()+".dlq.") {
		return nil, fmt.Errorf("%w %d in %s", ErrNoEntry, seq, q.Stream())
	}
	return newEntry(q.subj.Prefix(), m.Sequence, m.Time, m.Subject, m.Header, m.Data), nil
}

// Delete removes e from the DLQ; an entry already gone (retried or purged
// by someone else) is no error.
func (q *Queue) Delete(ctx context.Context, e *Entry) error {
	err := q.stream.DeleteMsg(ctx, e.Seq)
	if err == nil {
		return nil
	}
	// The server's refusal to delete a missing message reaches nats.go
	// as text only: ask whether the entry is still there.
	if _, gerr := q.stream.GetMsg(ctx, e.Seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("deleting DLQ entry %d: %w", e.Seq, err)
}

// PurgeStages removes every entry of stages (of every stage when empty)
// up to and including sequence last, the one a Scan returned: entries
// dead-lettered since are kept, as they were not shown. One request per
// stage, where deleting entry by entry takes one each.
func (q *Queue) PurgeStages(ctx context.Context, stages []string, last uint64) error {
	subjects := []string{q.subj.AllDLQ()}
	if len(stages) > 0 {
		subjects = subjects[:0]
		for _, s := range stages {
			subjects = append(subjects, q.subj.DLQ(s))
		}
	}
	for _, s := range subjects {
		err := q.stream.Purge(ctx, jetstream.WithPurgeSubject(s), jetstream.WithPurgeSequence(last+1))
		if err != nil {
			return fmt.Errorf("purging %s from %s: %w", s, q.Stream(), err)
		}
	}
	return nil
}
