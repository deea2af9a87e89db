package bus

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the worker loop's per-stage metrics. Create one per process
// registry and share it between the workers of that process.
type Metrics struct {
	Messages  *prometheus.CounterVec
	Handle    *prometheus.HistogramVec
	InFlight  *prometheus.GaugeVec
	Pending   *prometheus.GaugeVec
	Published *prometheus.CounterVec
	// AckPending, with Pending, is the consumer's lag as KEDA's
	// nats-jetstream scaler reads it (num_pending + num_ack_pending).
	AckPending *prometheus.GaugeVec
	// OldestUnprocessedAge shows a stalled stage even when the lag is
	// small: a message retried for an hour keeps it rising.
	OldestUnprocessedAge *prometheus.GaugeVec
	// DLQMessages is the stage's DLQ depth.
	DLQMessages *prometheus.GaugeVec
	// Retries counts naks by the reason the handler gave (see Retry):
	// a dependency failing for long shows as a steady rate, and an
	// alert can tell an outage from a refusal that needs a human.
	Retries *prometheus.CounterVec
	// InProgressAcks counts the in-progress acks sent for messages
	// handled for longer than a part of AckWait, which keep the server
	// from redelivering them to another replica meanwhile.
	InProgressAcks *prometheus.CounterVec
	// OldestRetained is the age of the oldest message its input stream
	// and that stream's archive still keep: the oldest message not
	// processed by every consumer, and how far back a review
	// (stormweir replay) can look.
	OldestRetained *prometheus.GaugeVec
	// StreamFill is how full the input stream and its archive are: a
	// processing stream at 1 refuses new messages (the receiver answers
	// 503), an archive at 1 drops its oldest.
	StreamFill *prometheus.GaugeVec
}

// Message results counted by Metrics.Messages.
const (
	ResultAck  = "ack"
	ResultNak  = "nak"
	ResultTerm = "term"
	ResultDLQ  = "dlq"
	// ResultRequeued counts messages handed back unprocessed at shutdown.
	ResultRequeued = "requeued"
)

// NewMetrics registers the worker metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_worker_messages_total",
			Help: "Messages finished by a stage's worker loop, by result (ack, nak, term, dlq, requeued).",
		}, []string{"stage", "result"}),
		Handle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stormweir_worker_handle_seconds",
			Help:    "Time from receiving a message to acking or naking it, outputs published included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}, []string{"stage"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_worker_in_flight",
			Help: "Messages being handled right now.",
		}, []string{"stage"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_consumer_pending",
			Help: "Messages in the stage's stream not yet delivered to it (consumer num_pending).",
		}, []string{"stage"}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_worker_published_total",
			Help: "Outputs published by a stage, by whether JetStream absorbed them as duplicates.",
		}, []string{"stage", "duplicate"}),
		AckPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_consumer_ack_pending",
			Help: "Messages delivered to the stage and not yet acknowledged (consumer num_ack_pending); with stormweir_consumer_pending the lag KEDA scales on.",
		}, []string{"stage"}),
		OldestUnprocessedAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_consumer_oldest_unprocessed_age_seconds",
			Help: "Time since the oldest message the stage has not acknowledged was stored in its stream; 0 when it has none.",
		}, []string{"stage"}),
		DLQMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_dlq_messages",
			Help: "Messages the stage dead-lettered that are still in the DLQ stream (its depth).",
		}, []string{"stage"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_worker_retries_total",
			Help: "Messages a stage handed back to be delivered again after a failure, by reason (forbidden, throttled, unavailable, timeout, publish, panic, error, ...).",
		}, []string{"stage", "reason"}),
		InProgressAcks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_worker_in_progress_acks_total",
			Help: "In-progress acks sent for messages still being handled after a third of ack_wait, so the server does not redeliver them meanwhile.",
		}, []string{"stage"}),
		OldestRetained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_stream_oldest_retained_age_seconds",
			Help: "Age of the oldest message the stream still keeps; 0 when it is empty. In a processing stream (STORMWEIR_SIGNALS, _INCIDENTS) the oldest message some stage or the archive has not processed; in an archive (_ARCHIVE) how far back stormweir replay can look. The deduper reports the signals streams, the aggregator and writer the incidents streams.",
		}, []string{"stream"}),
		StreamFill: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stormweir_stream_fill_ratio",
			Help: "How full the stream is against its max_bytes or max_msgs, whichever is nearer (0 without limits). A processing stream at 1 refuses new messages: the receiver answers 503 and the stages retry their outputs until the stage behind it catches up. An archive at 1 drops its oldest messages.",
		}, []string{"stream"}),
	}
	reg.MustRegister(m.Messages, m.Handle, m.InFlight, m.Pending, m.Published, m.AckPending, m.OldestUnprocessedAge, m.DLQMessages, m.OldestRetained, m.StreamFill, m.Retries, m.InProgressAcks)
	return m
}
