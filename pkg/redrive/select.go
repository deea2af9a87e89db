package redrive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Recorded is one signal as the source pipeline's signals stream holds
// it.
type Recorded struct {
	Subject string
	Data    []byte
	Header  nats.Header
	// At is where it is recorded: "STREAM#seq".
	At string
}

// ErrNothingSelected is returned by Select when no recorded signal
// matches: an empty re-drive is a mistake in the selection.
var ErrNothingSelected = errors.New("no recorded signal matches the selection")

// Select calls fn with every signal of the pipeline under prefix that
// sel selects, in the order they were received: stored in its range,
// with labels its matchers match, of its fingerprint, and, for an
// incident (or a storm), the signals its deduper decided into it (a
// storm's: those of its member incidents), read from the decisions
// stream. It reads with ordered ephemeral consumers only.
func Select(ctx context.Context, js jetstream.JetStream, prefix string, sel review.Selector, fn func(*Recorded) error) error {
	subj := bus.NewSubjects(prefix)
	var ids map[string]bool
	if sel.Incident != "" {
		var err error
		if ids, err = signalsOf(ctx, js, subj, sel.Incident); err != nil {
			return err
		}
		if len(ids) == 0 {
			return fmt.Errorf("no decision of incident or storm %s is recorded in %s", sel.Incident, subj.StreamName(bus.StreamIncidentsArchive))
		}
	}
	n := 0
	err := read(ctx, js, subj.StreamName(bus.StreamSignalsArchive), sel.Since, []string{subj.AllSignals()}, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		if !sel.Until.IsZero() && !md.Timestamp.Before(sel.Until) {
			return false, nil
		}
		var head signal.Head
		if signal.DecodeHead(m.Data(), &head) != nil {
			return true, nil
		}
		if sel.Fingerprint != "" && head.Fingerprint != sel.Fingerprint || ids != nil && !ids[head.ID] {
			return true, nil
		}
		if len(sel.Matchers) > 0 {
			var sig signal.Signal
			if signal.Decode(m.Data(), &sig) != nil || !sel.MatchLabels(review.SignalLabels(&sig)) {
				return true, nil
			}
		}
		n++
		return true, fn(&Recorded{Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), At: fmt.Sprintf("%s#%d", md.Stream, md.Sequence.Stream)})
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNothingSelected
	}
	return nil
}

// signalsOf returns the ids of the signals decided into incident id or,
// for a storm id, into the incidents routed to it.
func signalsOf(ctx context.Context, js jetstream.JetStream, subj bus.Subjects, id string) (map[string]bool, error) {
	byIncident := map[string][]string{}
	members := map[string]bool{id: true}
	err := read(ctx, js, subj.StreamName(bus.StreamIncidentsArchive), time.Time{}, []string{subj.AllDedup(), subj.IncidentsUpdate()},
		func(m jetstream.Msg, _ *jetstream.MsgMetadata) (bool, error) {
			var ev struct {
				IncidentID string          `json:"incidentID"`
				Route      string          `json:"route"`
				Signal     json.RawMessage `json:"signal"`
			}
			var head signal.Head
			if json.Unmarshal(m.Data(), &ev) != nil || ev.IncidentID == "" || signal.DecodeHead(ev.Signal, &head) != nil {
				return true, nil
			}
			byIncident[ev.IncidentID] = append(byIncident[ev.IncidentID], head.ID)
			if ev.Route == id {
				members[ev.IncidentID] = true
			}
			return true, nil
		})
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for inc := range members {
		for _, s := range byIncident[inc] {
			ids[s] = true
		}
	}
	return ids, nil
}

// read calls fn with the messages of stream on subjects stored from
// since on, up to the last one stored when it started, until fn returns
// false or an error.
func read(ctx context.Context, js jetstream.JetStream, stream string, since time.Time, subjects []string,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) (bool, error)) error {
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w (is bus.prefix right, and has the pipeline run?)", stream, err)
	}
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: subjects}
	if !since.IsZero() {
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	oc, release, err := bus.OpenReader(ctx, st, cc)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	defer release()
	info, err := oc.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		more, err := fn(m, md)
		if err != nil || !more || md.NumPending == 0 {
			return err
		}
	}
}
