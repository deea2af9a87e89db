package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
)

// Stream kinds, the suffix of each stream's name.
const (
	StreamSignals   = "SIGNALS"
	StreamIncidents = "INCIDENTS"
	StreamDLQ       = "DLQ"
)

// StreamConfigs returns the definitions of the pipeline's streams: the raw
// signals (kept for replay), the hops between stages, and the DLQ.
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
			Duplicates:  s.DuplicateWindow,
			Replicas:    s.Replicas,
			Storage:     storage,
		}
	}
	return []jetstream.StreamConfig{
		def(StreamSignals, cfg.Signals, subj.AllSignals()),
		def(StreamIncidents, cfg.Incidents, subj.AllDedup(), subj.AllIncidents(), subj.AllAudit()),
		def(StreamDLQ, cfg.DLQ, subj.AllDLQ()),
	}
}

// ReviewStreams names the streams a review reads, in the order it reads
// them: the signals as received, the decisions (incident and storm events,
// audit records) and the dead letters.
func ReviewStreams(prefix string) []string {
	subj := NewSubjects(prefix)
	return []string{subj.StreamName(StreamSignals), subj.StreamName(StreamIncidents), subj.StreamName(StreamDLQ)}
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

// EnsureStreams creates or updates every stream, so a deployment converges
// on the configured limits at start-up.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg config.Bus) error {
	for _, sc := range StreamConfigs(cfg) {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("creating or updating stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// CheckStreams reports whether every stream exists, for a process that
// does not manage them (bus.manage_streams false): it needs only the right
// to read their info. A missing stream is jetstream.ErrStreamNotFound.
func CheckStreams(ctx context.Context, js jetstream.JetStream, cfg config.Bus) error {
	for _, sc := range StreamConfigs(cfg) {
		if _, err := js.Stream(ctx, sc.Name); err != nil {
			return fmt.Errorf("looking up stream %s: %w", sc.Name, err)
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
