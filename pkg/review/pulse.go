package review

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
)

// StreamState is one recorded stream as its server reports it.
type StreamState struct {
	Name string
	// Msgs is how many messages the stream holds; LastSeq counts every
	// message it ever stored, so its growth between two pulses is a rate
	// that retention does not distort.
	Msgs, LastSeq uint64
	Bytes         uint64
}

// ConsumerLag is one stage consumer's backlog.
type ConsumerLag struct {
	Stream, Name string
	// Pending are stored messages not yet delivered; AckPending delivered
	// and not yet acknowledged; Redelivered delivered more than once.
	Pending     uint64
	AckPending  int
	Redelivered int
}

// OpenStorm is a storm whose last recorded event is not its close.
type OpenStorm struct {
	ID          string
	Type        incident.StormType
	Scope       string
	Members     int64
	Occurrences int64
	DetectedAt  time.Time
	LastSeen    time.Time
}

// Pulse is what a pipeline's streams say about it at one moment: how much
// was received and decided so far, the stage consumers' backlogs, the
// dead letters kept and the storms still open. Two pulses give rates
// (Rates). It reads stream and consumer information and, for the storms,
// the storm events of the decisions stream since a lookback; like every
// review it only reads.
type Pulse struct {
	At                              time.Time
	Signals, Decisions, DeadLetters StreamState
	Consumers                       []ConsumerLag
	OpenStorms                      []OpenStorm
}

// ReadPulse reads the pulse of the pipeline under prefix at now. Storms
// are looked for among the storm events stored since now-lookback: a
// storm closes at the latest aggregator.max_duration after it opened, so
// a lookback of at least that finds every open one.
func ReadPulse(ctx context.Context, js jetstream.JetStream, prefix string, now time.Time, lookback time.Duration) (*Pulse, error) {
	if err := CheckStreams(ctx, js, prefix); err != nil {
		return nil, err
	}
	p := &Pulse{At: now}
	names := bus.ReviewStreams(prefix)
	states := []*StreamState{&p.Signals, &p.Decisions, &p.DeadLetters}
	for i, name := range names[:3] {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", name, err)
		}
		s := st.CachedInfo().State
		*states[i] = StreamState{Name: name, Msgs: s.Msgs, LastSeq: s.LastSeq, Bytes: s.Bytes}
		if i == 2 {
			continue // nothing consumes the dead letters
		}
		// The stages consume the processing stream the archive copies.
		name = strings.TrimSuffix(name, "_ARCHIVE")
		if st, err = js.Stream(ctx, name); err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", name, err)
		}
		lister := st.ListConsumers(ctx)
		for ci := range lister.Info() {
			if ci.Config.Durable == "" {
				continue // a review's own ordered consumer
			}
			p.Consumers = append(p.Consumers, ConsumerLag{Stream: name, Name: ci.Name, Pending: ci.NumPending,
				AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered})
		}
		if err := lister.Err(); err != nil {
			return nil, fmt.Errorf("listing the consumers of stream %s: %w", name, err)
		}
	}
	slices.SortFunc(p.Consumers, func(x, y ConsumerLag) int {
		return strings.Compare(x.Stream+" "+x.Name, y.Stream+" "+y.Name)
	})
	storms, err := openStorms(ctx, js, prefix, now.Add(-lookback))
	if err != nil {
		return nil, err
	}
	p.OpenStorms = storms
	return p, nil
}

// Rates are the signals received and the decisions recorded per second
// between prev and p; zero without a previous pulse.
func (p *Pulse) Rates(prev *Pulse) (intake, decisions float64) {
	if prev == nil {
		return 0, 0
	}
	secs := p.At.Sub(prev.At).Seconds()
	if secs <= 0 {
		return 0, 0
	}
	grow := func(now, was uint64) float64 {
		if now < was {
			return 0 // the stream was recreated
		}
		return float64(now-was) / secs
	}
	return grow(p.Signals.LastSeq, prev.Signals.LastSeq), grow(p.Decisions.LastSeq, prev.Decisions.LastSeq)
}

// openStorms reads the storm events stored since since and keeps the
// storms whose last event is not a close.
func openStorms(ctx context.Context, js jetstream.JetStream, prefix string, since time.Time) ([]OpenStorm, error) {
	name := bus.ReviewStreams(prefix)[1]
	st, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", name, err)
	}
	info := st.CachedInfo().State
	if info.Msgs == 0 || info.LastTime.Before(since) {
		return nil, nil
	}
	subject := bus.NewSubjects(prefix).IncidentsStorm()
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if since.After(info.FirstTime) {
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, release, err := bus.OpenReader(ctx, st, occ)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", name, err)
	}
	defer release()
	// The consumer's pending count says when the read has caught up:
	// with no storm event in the range there is nothing to wait for.
	ci, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", name, err)
	}
	byID := map[string]*OpenStorm{}
	var order []string
	if ci.NumPending > 0 {
		it, err := cons.Messages(jetstream.PullMaxMessages(512))
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", name, err)
		}
		defer it.Stop()
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		for {
			jm, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					break
				}
				return nil, fmt.Errorf("reading stream %s: %w", name, err)
			}
			var s incident.Storm
			if incident.Unmarshal(jm.Data(), &s) == nil && s.StormID != "" {
				o := byID[s.StormID]
				if o == nil {
					o = &OpenStorm{ID: s.StormID}
					byID[s.StormID] = o
					order = append(order, s.StormID)
				}
				if s.Phase == incident.StormClosed {
					delete(byID, s.StormID)
				} else {
					*o = OpenStorm{ID: s.StormID, Type: s.Type, Scope: FormatScope(s.Scope), Members: s.Members,
						Occurrences: s.Occurrences, DetectedAt: s.DetectedAt, LastSeen: s.LastSeen}
				}
			}
			md, err := jm.Metadata()
			if err != nil {
				return nil, fmt.Errorf("reading stream %s: %w", name, err)
			}
			if md.NumPending == 0 {
				break
			}
		}
	}
	var out []OpenStorm
	for _, id := range order {
		if o := byID[id]; o != nil {
			out = append(out, *o)
			delete(byID, id)
		}
	}
	return out, nil
}
