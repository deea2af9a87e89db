package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
)

// Stream kinds, the suffix of each stream's name.
const (
	// StreamSignals holds the signals the deduper has not processed.
	StreamSignals = "SIGNALS"
	// StreamIncidents holds the messages between the deduper, the
	// aggregator and the writer until each has processed its own.
	StreamIncidents = "INCIDENTS"
	// StreamDLQ holds what the stages gave up on.
	StreamDLQ = "DLQ"
	// StreamSignalsArchive and StreamIncidentsArchive are the review's
	// copies of the two (and of the audit records), kept by age and size.
	StreamSignalsArchive   = "SIGNALS_ARCHIVE"
	StreamIncidentsArchive = "INCIDENTS_ARCHIVE"
)

// ArchiveConsumer is the durable consumer of each processing stream
// through which its archive sources it. It acknowledges what the archive
// stored (flow-control acks), so a message stays in the processing stream
// until the archive has it too.
const ArchiveConsumer = "archive"

// archiveMaxAckPending bounds what the archive consumer has in flight: the
// messages sourced and not yet confirmed stored.
const archiveMaxAckPending = 10_000

// The durable consumers of the pipeline's stages.
const (
	ConsumerDeduper    = "deduper"
	ConsumerAggregator = "aggregator"
	ConsumerWriter     = "writer"
)

// PipelineConsumers returns the durable consumers the stages read with.
// The processing streams keep a message until every consumer whose
// filter it matches has acknowledged it (interest retention), so each
// must exist before the first message it should see is stored:
// EnsureStreams makes them all together with the streams.
func PipelineConsumers(subj Subjects) []ConsumerSpec {
	return []ConsumerSpec{
		{Stage: ConsumerDeduper, Stream: StreamSignals, Subjects: []string{subj.AllSignals()}},
		{Stage: ConsumerAggregator, Stream: StreamIncidents, Subjects: []string{subj.AllDedup()}},
		{Stage: ConsumerWriter, Stream: StreamIncidents, Subjects: []string{subj.AllIncidents()}},
	}
}

// PipelineConsumer returns the spec of stage's consumer (one of the
// Consumer* names).
func PipelineConsumer(subj Subjects, stage string) ConsumerSpec {
	for _, c := range PipelineConsumers(subj) {
		if c.Stage == stage {
			return c
		}
	}
	panic("bus: no pipeline consumer " + stage)
}

// StreamConfigs returns the definitions of the pipeline's streams in the
// order they are created: the processing streams (signals, and the hops
// between stages), the DLQ, then the archives that source the processing
// streams for review.
//
// A processing stream keeps a message until its stage's consumer and the
// archive's have acknowledged it (interest retention) and, when full,
// refuses new ones (discard new): an accepted signal is never dropped
// before every stage processed it, and a full bus shows as the receiver's
// 503 and the stages' retries. The archives and the DLQ drop their oldest
// by their own limits (limits retention, discard old).
func StreamConfigs(cfg config.Bus) []jetstream.StreamConfig {
	subj := NewSubjects(cfg.Prefix)
	def := func(kind string, s config.Stream, subjects ...string) jetstream.StreamConfig {
		storage := jetstream.FileStorage
		if s.Storage == "memory" {
			storage = jetstream.MemoryStorage
		}
		return jetstream.StreamConfig{
			Name:        subj.StreamName(kind),
			Description: "stormweir " + kind,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      s.MaxAge,
			MaxBytes:    s.MaxBytes,
			MaxMsgs:     s.MaxMsgs,
			Duplicates:  s.DuplicateWindow,
			Replicas:    s.Replicas,
			Storage:     storage,
		}
	}
	processing := func(sc jetstream.StreamConfig) jetstream.StreamConfig {
		sc.Retention, sc.Discard, sc.MaxAge = jetstream.InterestPolicy, jetstream.DiscardNew, 0
		return sc
	}
	archive := func(sc jetstream.StreamConfig, from string) jetstream.StreamConfig {
		sc.Sources = []*jetstream.StreamSource{{
			Name:     subj.StreamName(from),
			Consumer: &jetstream.StreamConsumerSource{Name: ArchiveConsumer, DeliverSubject: archiveDeliverSubject(subj, from)},
		}}
		return sc
	}
	return []jetstream.StreamConfig{
		processing(def(StreamSignals, cfg.Signals, subj.AllSignals())),
		processing(def(StreamIncidents, cfg.Incidents, subj.AllDedup(), subj.AllIncidents())),
		def(StreamDLQ, cfg.DLQ, subj.AllDLQ()),
		archive(def(StreamSignalsArchive, cfg.Archive.Signals), StreamSignals),
		// The audit records are for review only: no stage consumes them,
		// so they go to the archive directly.
		archive(def(StreamIncidentsArchive, cfg.Archive.Incidents, subj.AllAudit()), StreamIncidents),
	}
}

// archiveDeliverSubject is where the archive consumer of the processing
// stream kind pushes to; only the server's sourcing listens there.
func archiveDeliverSubject(subj Subjects, kind string) string {
	return subj.Prefix() + "._archive." + strings.ToLower(kind)
}

// archiveConsumerConfig is the durable push consumer an archive sources
// its processing stream through.
func archiveConsumerConfig(subj Subjects, kind string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ArchiveConsumer,
		Description:    "stormweir archive of " + kind,
		DeliverSubject: archiveDeliverSubject(subj, kind),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		// nats-server requires 1s for a flow-control ack policy.
		IdleHeartbeat: time.Second,
		MaxAckPending: archiveMaxAckPending,
	}
}

// ReviewStreams names the streams a review reads, in the order it reads
// them: the signals as received, the decisions (incident and storm events,
// audit records) and the dead letters. The first two are the archives: the
// processing streams let go of what every stage has processed.
func ReviewStreams(prefix string) []string {
	subj := NewSubjects(prefix)
	return []string{subj.StreamName(StreamSignalsArchive), subj.StreamName(StreamIncidentsArchive), subj.StreamName(StreamDLQ)}
}

// AuditOutput is the output recording a as stage's decision. msgID may
// be empty; when a redelivered input records the same decision again, a
// msgID derived from the input lets JetStream absorb the copy.
func AuditOutput(subj Subjects, stage string, a *incident.Audit, msgID string) (Output, error) {
	data, err := incident.Marshal(a)
	if err != nil {
		return Output{}, Permanent(fmt.Errorf("encoding %s audit record: %w", a.Kind, err))
	}
	h := nats.Header{}
	if a.Fingerprint != "" {
		h.Set(HeaderFingerprint, a.Fingerprint)
	}
	if a.IncidentID != "" {
		h.Set(HeaderIncident, a.IncidentID)
	}
	return Output{Subject: subj.Audit(stage), Data: data, MsgID: msgID, Header: h}, nil
}

// RetentionError is a stream that exists with another retention policy
// than stormweir defines for it: a stream made by an earlier version
// (limits retention). JetStream cannot change a stream's retention in
// place, so start-up stops and says what to do.
type RetentionError struct {
	Stream    string
	Has, Want jetstream.RetentionPolicy
}

func (e *RetentionError) Error() string {
	return fmt.Sprintf("stream %s has %s retention and this stormweir needs %s, which JetStream cannot change in place "+
		"(the stream was made by a stormweir without archive streams): stop the receivers, let the stages finish what it holds "+
		"(stormweir_consumer_pending 0), delete it (nats stream rm %s; `nats stream backup %s DIR` first keeps its history) "+
		"and start again: it is made anew, with %s_ARCHIVE beside it for reviews",
		e.Stream, retentionName(e.Has), retentionName(e.Want), e.Stream, e.Stream, e.Stream)
}

func retentionName(r jetstream.RetentionPolicy) string {
	switch r {
	case jetstream.LimitsPolicy:
		return "limits"
	case jetstream.InterestPolicy:
		return "interest"
	case jetstream.WorkQueuePolicy:
		return "work-queue"
	}
	return r.String()
}

// EnsureStreams creates or updates every stream, so a deployment converges
// on the configured limits at start-up, and creates the stages' durable
// consumers (PipelineConsumers) that do not exist yet, after the
// processing streams and before the archives: a process that does not
// manage the streams waits for the archives (CheckStreams), so nothing is
// published before every consumer that must see it exists. A consumer
// that exists is left as its stage last set it.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg config.Bus) error {
	subj := NewSubjects(cfg.Prefix)
	scs := StreamConfigs(cfg)
	for _, sc := range scs {
		if len(sc.Sources) == 0 {
			if err := ensureStream(ctx, js, sc); err != nil {
				return err
			}
		}
	}
	for _, spec := range PipelineConsumers(subj) {
		stream := subj.StreamName(spec.Stream)
		_, err := js.CreateConsumer(ctx, stream, ConsumerConfig(spec, cfg.Consumer))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("creating consumer %s on %s: %w", spec.Stage, stream, err)
		}
	}
	for _, kind := range []string{StreamSignals, StreamIncidents} {
		stream := subj.StreamName(kind)
		if _, err := js.CreateOrUpdatePushConsumer(ctx, stream, archiveConsumerConfig(subj, kind)); err != nil {
			return fmt.Errorf("creating or updating consumer %s on %s: %w", ArchiveConsumer, stream, err)
		}
	}
	for _, sc := range scs {
		if len(sc.Sources) > 0 {
			if err := ensureStream(ctx, js, sc); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureStream creates or updates sc, refusing to touch a stream whose
// retention differs (RetentionError).
func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	st, err := js.Stream(ctx, sc.Name)
	switch {
	case err == nil:
		if has := st.CachedInfo().Config.Retention; has != sc.Retention {
			return &RetentionError{Stream: sc.Name, Has: has, Want: sc.Retention}
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("looking up stream %s: %w", sc.Name, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("creating or updating stream %s: %w", sc.Name, err)
	}
	return nil
}

// CheckStreams reports whether every stream exists, for a process that
// does not manage them (bus.manage_streams false): it needs only the right
// to read their info. A missing stream is jetstream.ErrStreamNotFound.
// The archives are made last, after the stages' consumers, so once they
// exist a process may publish.
func CheckStreams(ctx context.Context, js jetstream.JetStream, cfg config.Bus) error {
	for _, sc := range StreamConfigs(cfg) {
		st, err := js.Stream(ctx, sc.Name)
		if err != nil {
			return fmt.Errorf("looking up stream %s: %w", sc.Name, err)
		}
		if has := st.CachedInfo().Config.Retention; has != sc.Retention {
			return &RetentionError{Stream: sc.Name, Has: has, Want: sc.Retention}
		}
	}
	return nil
}

// ConsumerSpec names a stage's durable consumer and what it reads.
type ConsumerSpec struct {
	// Stage is the durable name, shared by every replica of the stage.
	Stage string
	// Stream is the stream kind (StreamSignals or StreamIncidents).
	Stream string
	// Subjects filter the stream.
	Subjects []string
}

// ConsumerConfig returns the durable pull consumer definition for spec.
func ConsumerConfig(spec ConsumerSpec, c config.Consumer) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:         spec.Stage,
		Description:     "stormweir " + spec.Stage,
		DeliverPolicy:   jetstream.DeliverAllPolicy,
		AckPolicy:       jetstream.AckExplicitPolicy,
		AckWait:         c.AckWait,
		MaxDeliver:      c.MaxDeliver,
		BackOff:         c.BackOff,
		MaxAckPending:   c.MaxAckPending,
		FilterSubjects:  spec.Subjects,
		MaxRequestBatch: max(c.FetchBatch, 1),
	}
}

// EnsureConsumer creates or updates the stage's durable consumer.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg config.Bus, spec ConsumerSpec) (jetstream.Consumer, error) {
	stream := NewSubjects(cfg.Prefix).StreamName(spec.Stream)
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, ConsumerConfig(spec, cfg.Consumer))
	if err != nil {
		return nil, fmt.Errorf("creating or updating consumer %s on %s: %w", spec.Stage, stream, err)
	}
	return cons, nil
}

// WaitArchived waits until both archives hold every message their
// processing streams had stored when it was called (WaitStreamArchived).
// Sourcing is asynchronous, so a review of what was just published (a
// test, a replay right after a load) waits here first.
func WaitArchived(ctx context.Context, js jetstream.JetStream, prefix string) error {
	subj := NewSubjects(prefix)
	for _, kind := range []string{StreamSignals, StreamIncidents} {
		if err := WaitStreamArchived(ctx, js, subj.StreamName(kind)); err != nil {
			return err
		}
	}
	return nil
}

// WaitStreamArchived waits until the archive of the processing stream
// holds every message the stream had stored when it was called: the
// archive's consumer has delivered them and the archive confirmed
// storing them (its ack floor).
func WaitStreamArchived(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("looking up stream %s: %w", stream, err)
	}
	last := st.CachedInfo().State.LastSeq
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		c, err := js.PushConsumer(ctx, stream, ArchiveConsumer)
		if err != nil {
			return fmt.Errorf("looking up the archive's consumer on %s: %w", stream, err)
		}
		info := c.CachedInfo()
		if info.AckFloor.Stream >= last {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the archive of %s (at %d of %d): %w", stream, info.AckFloor.Stream, last, ctx.Err())
		case <-time.After(wait):
		}
	}
}
