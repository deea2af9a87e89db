package bus

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consumerStats reads what the stage's gauges show about its consumer:
// how far behind it is, how old its oldest unfinished message is, and how
// many of its messages sit in the DLQ. Every replica of a stage reports the
// same consumer-wide values; dashboards and alerts take the max per stage.
type consumerStats struct {
	js    jetstream.JetStream
	o     WorkerOptions
	now   func() time.Time
	input jetstream.Stream // the consumer's stream, looked up once
	// archive is the input's archive (the review's copy), looked up once.
	archive jetstream.Stream
	dlq     jetstream.Stream
}

func newConsumerStats(js jetstream.JetStream, o WorkerOptions) *consumerStats {
	return &consumerStats{js: js, o: o, now: time.Now}
}

// pollStats refreshes the gauges every StatsInterval until ctx ends. Each
// round costs the server a consumer info, at most one message read, a
// DLQ stream info filtered to one subject and an info of the input stream.
func (w *Worker) pollStats(ctx context.Context) {
	t := time.NewTicker(w.o.StatsInterval)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		w.stats.update(ictx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// update sets the gauges it can read now; a gauge whose read failed keeps
// its last value (the bus being down shows in readiness, not as a lag of 0).
func (s *consumerStats) update(ctx context.Context) {
	m, stage := s.o.Metrics, s.o.Stage
	info, err := s.o.Consumer.Info(ctx)
	if err == nil {
		m.Pending.WithLabelValues(stage).Set(float64(info.NumPending))
		m.AckPending.WithLabelValues(stage).Set(float64(info.NumAckPending))
		if age, err := s.oldestUnprocessedAge(ctx, info); err == nil {
			m.OldestUnprocessedAge.WithLabelValues(stage).Set(age.Seconds())
		}
	}
	if n, err := s.dlqDepth(ctx); err == nil {
		m.DLQMessages.WithLabelValues(stage).Set(float64(n))
	}
	if err == nil {
		for _, name := range []string{info.Stream, info.Stream + "_ARCHIVE"} {
			if st, err := s.streamInfo(ctx, name); err == nil {
				m.OldestRetained.WithLabelValues(name).Set(s.oldestRetainedAge(st).Seconds())
				m.StreamFill.WithLabelValues(name).Set(fill(st))
			}
		}
	}
}

// streamInfo reads the info of the stage's input stream or of its
// archive, looking each up once.
func (s *consumerStats) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	p := &s.archive
	if !strings.HasSuffix(name, "_ARCHIVE") {
		p = &s.input
	}
	if *p == nil {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		*p = st
	}
	return (*p).Info(ctx)
}

// oldestRetainedAge is the age of the oldest message a stream keeps (0
// when it is empty). In the input stream that is the oldest message some
// consumer (a stage, or the archive) has not acknowledged; in the archive
// its limits (max_age, max_bytes) decide it, and it is how far back a
// review can read.
func (s *consumerStats) oldestRetainedAge(info *jetstream.StreamInfo) time.Duration {
	if info.State.Msgs == 0 {
		return 0
	}
	return max(s.now().Sub(info.State.FirstTime), 0)
}

// fill is how full a stream is, against whichever of its max_bytes and
// max_msgs it is nearer (0 when it has neither).
func fill(info *jetstream.StreamInfo) float64 {
	var f float64
	if mb := info.Config.MaxBytes; mb > 0 {
		f = float64(info.State.Bytes) / float64(mb)
	}
	if mm := info.Config.MaxMsgs; mm > 0 {
		f = max(f, float64(info.State.Msgs)/float64(mm))
	}
	return f
}

// oldestUnprocessedAge is how long the oldest message the stage has not
// acknowledged has been in the stream (0 when it has none). Everything at
// or below the consumer's ack floor is acknowledged, so that message is the
// first one after the floor on the consumer's subject: one direct read of
// its stored time, whether it is waiting for delivery or being retried.
func (s *consumerStats) oldestUnprocessedAge(ctx context.Context, info *jetstream.ConsumerInfo) (time.Duration, error) {
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return 0, nil
	}
	if s.input == nil {
		st, err := s.js.Stream(ctx, info.Stream)
		if err != nil {
			return 0, err
		}
		s.input = st
	}
	// Our consumers filter on one subject. With several (or none) the
	// first message after the floor on any subject is read: never younger
	// than the true oldest, so the age errs towards alerting.
	filter := info.Config.FilterSubject
	if fs := info.Config.FilterSubjects; len(fs) == 1 {
		filter = fs[0]
	} else if len(fs) > 1 {
		filter = ""
	}
	var opts []jetstream.GetMsgOpt
	if filter != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(filter))
	}
	msg, err := s.input.GetMsg(ctx, info.AckFloor.Stream+1, opts...)
	if err != nil {
		return 0, err
	}
	return max(s.now().Sub(msg.Time), 0), nil
}

// dlqDepth counts the stage's messages in the DLQ stream: a depth, so
// unlike the dlq result of stormweir_worker_messages_total it survives
// restarts and falls when messages are purged or retried.
func (s *consumerStats) dlqDepth(ctx context.Context) (uint64, error) {
	if s.dlq == nil {
		st, err := s.js.Stream(ctx, s.o.Subjects.StreamName(StreamDLQ))
		if err != nil {
			return 0, err
		}
		s.dlq = st
	}
	subject := s.o.Subjects.DLQ(s.o.Stage)
	info, err := s.dlq.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subject], nil
}
