package review

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
)

// Msg is one recorded message as a review reads it.
type Msg struct {
	Stream  string
	Seq     uint64
	Subject string
	// Stored is when the stream stored the message.
	Stored time.Time
	Header map[string][]string
	Data   []byte
}

// header returns the first value of header key k.
func (m *Msg) header(k string) string {
	if v := m.Header[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Progress is told how many messages a read will go through (once per
// stream, before its first message) and each message read; a progress
// bar implements it. nil reports nothing.
type Progress interface {
	Add(total int64)
	Done(n int64)
}

// ErrNotStormweir is wrapped by the error for a stream that exists under
// the expected name but is not one stormweir made.
var ErrNotStormweir = errors.New("not a stormweir stream")

// ErrNoStream is wrapped by the error for a stream that does not exist.
var ErrNoStream = errors.New("no such stream")

// ReadStream reads the messages of stream stored in the selector's time
// range, in stream order, with an ordered ephemeral consumer: the server
// forgets it when the read ends, and no durable consumer, acknowledgement
// or other stage is touched. It reads up to the last message stored when
// it started and calls fn for each; fn's error stops the read.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string, sel Selector, progress Progress, fn func(*Msg) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s: %w (is bus.prefix right, and has the pipeline run?)", stream, ErrNoStream)
		}
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	info := st.CachedInfo()
	if !strings.HasPrefix(info.Config.Description, "stormweir ") {
		return fmt.Errorf("stream %s: %w (description %q)", stream, ErrNotStormweir, info.Config.Description)
	}
	state := info.State
	if state.Msgs == 0 || (!sel.Since.IsZero() && state.LastTime.Before(sel.Since)) ||
		(!sel.Until.IsZero() && !state.FirstTime.Before(sel.Until)) {
		return nil
	}
	last := state.LastSeq
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !sel.Since.IsZero() && sel.Since.After(state.FirstTime) {
		since := sel.Since
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, release, err := bus.OpenReader(ctx, st, occ)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	defer release()
	if progress != nil {
		progress.Add(int64(state.Msgs))
	}
	// A large pull buffer: the messages are read once and dropped, and
	// the ordered consumer's throughput grows with the batch (see
	// BenchmarkReplay).
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var done int64
	defer func() {
		if progress != nil {
			progress.Done(done)
		}
	}()
	for {
		jm, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		md, err := jm.Metadata()
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		done++
		if progress != nil && done%1024 == 0 {
			progress.Done(done)
			done = 0
		}
		if !sel.Until.IsZero() && !md.Timestamp.Before(sel.Until) {
			return nil
		}
		m := Msg{Stream: stream, Seq: md.Sequence.Stream, Subject: jm.Subject(), Stored: md.Timestamp, Header: jm.Headers(), Data: jm.Data()}
		if sel.MatchTime(m.Stored) {
			if err := fn(&m); err != nil {
				return err
			}
		}
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return nil
		}
	}
}

// CheckStreams reports, as one line, why the pipeline under prefix cannot
// be reviewed: a stream missing or not stormweir's.
func CheckStreams(ctx context.Context, js jetstream.JetStream, prefix string) error {
	for _, name := range bus.ReviewStreams(prefix) {
		st, err := js.Stream(ctx, name)
		if err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("stream %s: %w (is bus.prefix right, and has the pipeline run?)", name, ErrNoStream)
			}
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		if d := st.CachedInfo().Config.Description; !strings.HasPrefix(d, "stormweir ") {
			return fmt.Errorf("stream %s: %w (description %q)", name, ErrNotStormweir, d)
		}
	}
	return nil
}
