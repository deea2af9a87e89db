// Package receiver is stormweir's HTTP intake: it authenticates webhook
// senders, decodes Alertmanager, Grafana and Kubernetes event payloads into signals,
// publishes them on the bus, and answers 202 only once JetStream has
// stored every signal of the request (DESIGN §1–2). It never needs Redis,
// and the Kubernetes API server only to review ServiceAccount tokens.
package receiver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"k8s.io/client-go/rest"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/service"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/pkg/tracing"
)

// Webhook paths.
const (
	PathAlertmanager    = "/api/v1/signals/alertmanager"
	PathPrometheus      = "/api/v1/signals/prometheus"
	PathKubernetesEvent = "/api/v1/signals/kubernetes-event"
	PathGrafana         = "/api/v1/signals/grafana"
)

// Publisher stores a request's signals; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, outs ...bus.Output) (bus.PublishResult, error)
	// MaxPayload is the largest message (bus.Output.Size) the bus
	// accepts; a signal over it is rejected alone.
	MaxPayload() int64
}

// publishChunk is how many signals of a request are encoded and
// published at a time. A request's messages (encoded signal, headers)
// weigh about as much as its decoded signals; built a chunk at a time,
// and reused, they no longer double the heap of a large request, and a
// 100-alert webhook is still one publish.
const publishChunk = 1024

// Receiver serves the webhook endpoints.
type Receiver struct {
	cfg      config.Receiver
	subjects bus.Subjects
	decoder  *signal.Decoder
	pub      Publisher
	auth     *authenticator
	health   *service.Health
	metrics  *metrics
	log      *slog.Logger
	server   *service.Server
	mux      *http.ServeMux
	tracer   trace.Tracer
	clk      clock.Clock
	// inflight holds the body bytes of the requests being handled
	// (receiver.max_inflight_bytes): a request that does not fit is
	// answered 503 at once instead of growing the heap.
	inflight *semaphore.Weighted
}

// Option adjusts a Receiver beyond its configuration.
type Option func(*options)

type options struct {
	clk    clock.Clock
	rest   *rest.Config
	tracer trace.Tracer
}

// WithClock sets the time source of receipt times and of the token file's
// re-read spacing; the wall clock by default. Request and publish
// latencies are measured on the wall clock: they are about the world.
func WithClock(c clock.Clock) Option { return func(o *options) { o.clk = c } }

// WithRestConfig sets the API server that reviews tokens
// (receiver.auth.token_review); loaded from its kubeconfig key, in-cluster
// or the usual places when not given.
func WithRestConfig(rc *rest.Config) Option { return func(o *options) { o.rest = rc } }

// WithTracer sets the tracer of the "receive" span of each webhook
// request; New passes the process's. Without one the request's
// traceparent (or a new one) still travels on with its signals.
func WithTracer(t trace.Tracer) Option { return func(o *options) { o.tracer = t } }

// New builds a Receiver from the process's bus, health and metrics. It
// binds receiver.listen but serves only when Run is called.
func New(cfg config.Config, p *service.Process, opts ...Option) (*Receiver, error) {
	if p.Tracer != nil {
		opts = append([]Option{WithTracer(p.Tracer)}, opts...)
	}
	r, err := NewHandler(cfg, p.Publisher(), p.Health, p.Registry, p.Log, opts...)
	if err != nil {
		return nil, err
	}
	srv, err := service.NewServer(cfg.Receiver.Listen, r, cfg.Receiver.ShutdownTimeout)
	if err != nil {
		return nil, err
	}
	srv.HTTP().ReadTimeout = cfg.Receiver.ReadTimeout
	r.server = srv
	return r, nil
}

// NewHandler builds a Receiver without a listener, for embedding its
// handler in another server or a test.
func NewHandler(cfg config.Config, pub Publisher, health *service.Health, reg prometheus.Registerer, log *slog.Logger, opts ...Option) (*Receiver, error) {
	o := options{clk: clock.Real{}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tracer == nil {
		o.tracer = tracing.Noop().Tracer()
	}
	if err := cfg.Receiver.CheckAuth(); err != nil {
		return nil, err
	}
	auth, err := newAuthenticator(cfg.Receiver.Auth, o.clk)
	if err != nil {
		return nil, err
	}
	if tr := cfg.Receiver.Auth.TokenReview; tr.Enabled && !cfg.Receiver.Auth.Disabled {
		if auth.reviewer, err = newTokenReviewer(tr, o.rest, o.clk, log, reg); err != nil {
			return nil, err
		}
	}
	fp, err := signal.NewFingerprinter(cfg.Fingerprint.Labels)
	if err != nil {
		return nil, err
	}
	if cfg.Receiver.Auth.Disabled {
		log.Warn("webhook authentication is disabled (receiver.auth.disabled): anyone who can reach the receiver can post signals")
	}
	mux := http.NewServeMux()
	health.Register(mux)
	return &Receiver{
		mux:      mux,
		cfg:      cfg.Receiver,
		subjects: bus.NewSubjects(cfg.Bus.Prefix),
		decoder:  signal.NewDecoder(fp, o.clk.Now),
		pub:      pub,
		auth:     auth,
		health:   health,
		metrics:  newMetrics(reg, cfg.Receiver.MaxInflightBytes),
		log:      log,
		tracer:   o.tracer,
		clk:      o.clk,
		inflight: semaphore.NewWeighted(cfg.Receiver.MaxInflightBytes),
	}, nil
}

// Addr is the bound listen address (after New).
func (r *Receiver) Addr() string { return r.server.Addr() }

// Run serves until ctx ends. Then readiness turns 503 at once, so load
// balancers stop sending, and in-flight requests finish within
// receiver.shutdown_timeout.
func (r *Receiver) Run(ctx context.Context) error {
	if r.server == nil {
		return errors.New("receiver: Run needs a Receiver built with New")
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.server.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		r.health.SetDraining()
		return nil
	})
	return g.Wait()
}

// ServeHTTP routes webhook, health and metrics requests.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case PathAlertmanager, PathPrometheus:
		r.serveWebhook(w, req, signal.SourceAlertmanager, r.decoder.DecodeAlertmanager)
	case PathKubernetesEvent:
		r.serveWebhook(w, req, signal.SourceKubernetesEvent, r.decoder.DecodeKubernetesEvents)
	case PathGrafana:
		r.serveWebhook(w, req, signal.SourceGrafana, r.decoder.DecodeGrafana)
	default:
		r.mux.ServeHTTP(w, req)
	}
}

// Response is the JSON body of a 202.
type Response struct {
	// Accepted counts signals stored now or before (duplicates included):
	// every one of them is safe.
	Accepted int `json:"accepted"`
	// Duplicates counts accepted signals JetStream had already stored
	// (a retried request).
	Duplicates int                `json:"duplicates"`
	Rejected   []signal.Rejection `json:"rejected"`
	Ignored    int                `json:"ignored"`
	// Truncated echoes Alertmanager's truncatedAlerts.
	Truncated int `json:"truncated,omitempty"`
}

// problem is an RFC 9457 problem document.
type problem struct {
	Type     string             `json:"type"`
	Title    string             `json:"title"`
	Status   int                `json:"status"`
	Detail   string             `json:"detail,omitempty"`
	Rejected []signal.Rejection `json:"rejected,omitempty"`
}

func (r *Receiver) serveWebhook(w http.ResponseWriter, req *http.Request, src signal.Source, decode func([]byte) (*signal.Batch, error)) {
	start := time.Now()
	// The receive span continues the sender's trace when the request
	// carries a traceparent; its context is what the signals carry on.
	ctx, span := r.tracer.Start(tracing.FromHTTP(req.Context(), req.Header), "receive", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	req = req.WithContext(ctx)
	m := r.metrics.source(string(src))
	code := r.webhook(w, req, src, m, decode)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("http.request.method", req.Method),
			attribute.String("url.path", req.URL.Path),
			attribute.String("stormweir.source", string(src)),
			attribute.Int("http.response.status_code", code),
		)
		if code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
	}
	if code == http.StatusAccepted {
		m.accepted202.Inc()
	} else {
		r.metrics.requests.WithLabelValues(string(src), strconv.Itoa(code)).Inc()
	}
	m.latency.Observe(time.Since(start).Seconds())
}

// webhook handles one request and returns the status it answered.
func (r *Receiver) webhook(w http.ResponseWriter, req *http.Request, src signal.Source, m *sourceMetrics, decode func([]byte) (*signal.Batch, error)) int {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeProblem(w, http.StatusMethodNotAllowed, "method not allowed", "use POST", nil)
	}
	switch err := r.auth.authenticate(req, src); err {
	case nil:
	case errForbidden:
		return writeProblem(w, http.StatusForbidden, "forbidden", fmt.Sprintf("the token's identity may not post %s signals (create signals.stormweir.io %q)", src, src), nil)
	case errAuthUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(int(max(r.cfg.RetryAfter.Seconds(), 1))))
		return writeProblem(w, http.StatusServiceUnavailable, "authentication unavailable", err.Error(), nil)
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="stormweir"`)
		return writeProblem(w, http.StatusUnauthorized, "unauthorized", err.Error(), nil)
	}
	if ct := req.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return writeProblem(w, http.StatusUnsupportedMediaType, "unsupported media type",
				fmt.Sprintf("content type %q is not JSON; send application/json", ct), nil)
		}
	}
	// Enforce the limit before reading: a declared length over it is
	// refused outright, and the reader stops at the limit otherwise.
	limit := r.cfg.MaxBodyBytes
	if req.ContentLength > limit {
		return r.tooLarge(w, req, src)
	}
	// Reserve the body's bytes in the budget shared by every request in
	// flight before reading it: the heap a request takes grows with its
	// body (DESIGN §1), so the budget bounds the receiver's. A body of
	// unknown length reserves the most it may be.
	cost := req.ContentLength
	if cost < 0 {
		cost = limit
	}
	if !r.inflight.TryAcquire(cost) {
		r.metrics.refused.WithLabelValues(refusedInflight).Inc()
		r.log.WarnContext(req.Context(), "request refused: receiver.max_inflight_bytes is taken by the requests in flight; asking the sender to retry",
			"source", src, "body_bytes", cost, "max_inflight_bytes", r.cfg.MaxInflightBytes)
		w.Header().Set("Retry-After", strconv.Itoa(int(max(r.cfg.RetryAfter.Seconds(), 1))))
		return writeProblem(w, http.StatusServiceUnavailable, "receiver busy",
			fmt.Sprintf("the requests in flight hold the receiver's memory budget (receiver.max_inflight_bytes, %d bytes); nothing of this request was stored, retry later", r.cfg.MaxInflightBytes), nil)
	}
	r.metrics.inflight.Add(float64(cost))
	defer func() {
		r.metrics.inflight.Sub(float64(cost))
		r.inflight.Release(cost)
	}()
	buf := getBuffer(req.ContentLength)
	defer putBuffer(buf)
	_, err := buf.ReadFrom(http.MaxBytesReader(w, req.Body, limit))
	body := buf.Bytes()
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return r.tooLarge(w, req, src)
		}
		return writeProblem(w, http.StatusBadRequest, "unreadable body", err.Error(), nil)
	}
	batch, err := decode(body)
	if err != nil {
		return writeProblem(w, http.StatusBadRequest, "invalid payload", err.Error(), nil)
	}
	m.rejected.Add(float64(len(batch.Rejected)))
	m.invalid.Add(float64(len(batch.Rejected)))
	m.ignored.Add(float64(len(batch.Ignored)))
	r.recordRefused(req.Context(), src, batch)
	if len(batch.Signals) == 0 && len(batch.Ignored) == 0 {
		return writeProblem(w, http.StatusBadRequest, "no valid signals", "every item of the request was rejected", batch.Rejected)
	}

	res, tooLarge, err := r.publish(req, src, m, batch)
	if len(tooLarge) > 0 {
		m.rejected.Add(float64(len(tooLarge)))
		m.tooLarge.Add(float64(len(tooLarge)))
		r.recordRefused(req.Context(), src, &signal.Batch{Rejected: tooLarge})
		batch.Rejected = append(batch.Rejected, tooLarge...)
		slices.SortStableFunc(batch.Rejected, func(a, b signal.Rejection) int { return a.Index - b.Index })
	}
	if err != nil {
		var enc *encodeError
		if errors.As(err, &enc) {
			return writeProblem(w, http.StatusBadRequest, "unencodable signal", err.Error(), nil)
		}
		m.failed.Add(float64(res.unsettled))
		w.Header().Set("Retry-After", strconv.Itoa(int(max(r.cfg.RetryAfter.Seconds(), 1))))
		if bus.IsFull(err) {
			// The signals stream holds what the deduper has not processed
			// and refuses more when full: the sender keeps them until the
			// pipeline catches up, nothing older is dropped for them.
			r.metrics.busFull.Add(float64(res.unsettled))
			r.log.WarnContext(req.Context(), "signals not stored: the bus is full; asking the sender to retry", "signals", res.unsettled, "err", err)
			return writeProblem(w, http.StatusServiceUnavailable, "bus full", "the pipeline is behind and its signals stream is full; signals were not stored; retry later", nil)
		}
		r.log.WarnContext(req.Context(), "signals not stored; asking the sender to retry", "signals", res.unsettled, "err", err)
		return writeProblem(w, http.StatusServiceUnavailable, "bus unavailable", "signals were not stored; retry later", nil)
	}
	accepted := len(batch.Signals) - len(tooLarge)
	if accepted == 0 && len(batch.Ignored) == 0 {
		return writeProblem(w, http.StatusBadRequest, "no valid signals", "every item of the request was rejected", batch.Rejected)
	}
	m.accepted.Add(float64(accepted - res.Duplicates))
	m.duplicate.Add(float64(res.Duplicates))
	resp := Response{Accepted: accepted, Duplicates: res.Duplicates, Rejected: batch.Rejected, Ignored: len(batch.Ignored), Truncated: batch.Truncated}
	if len(resp.Rejected) == 0 {
		// The common answer, written without reflection.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(resp.appendJSON(make([]byte, 0, 96)))
		return http.StatusAccepted
	}
	return writeJSON(w, http.StatusAccepted, "application/json", resp)
}

// tooLarge answers 413 for a body over receiver.max_body_bytes. It is
// not retried: the sender must split the request (Alertmanager's
// max_alerts) or the limit be raised.
func (r *Receiver) tooLarge(w http.ResponseWriter, req *http.Request, src signal.Source) int {
	r.metrics.refused.WithLabelValues(refusedBodyTooLarge).Inc()
	r.log.WarnContext(req.Context(), "request refused: body over receiver.max_body_bytes", "source", src, "content_length", req.ContentLength, "max_body_bytes", r.cfg.MaxBodyBytes)
	return writeProblem(w, http.StatusRequestEntityTooLarge, "payload too large",
		fmt.Sprintf("body exceeds receiver.max_body_bytes (%d bytes); send fewer alerts per request (Alertmanager: max_alerts)", r.cfg.MaxBodyBytes), nil)
}

// publishResult is what publish stored.
type publishResult struct {
	bus.PublishResult
	// unsettled counts the signals not known to be stored when publish
	// failed.
	unsettled int
}

// encodeError is a signal that could not be encoded: a bug, not the
// sender's nor the bus's fault.
type encodeError struct{ err error }

func (e *encodeError) Error() string { return e.err.Error() }
func (e *encodeError) Unwrap() error { return e.err }

// publish encodes the batch's signals and publishes them, publishChunk at
// a time, and returns once JetStream has stored all of them. A signal
// whose message exceeds the bus's max payload is left out and returned as
// a rejection: the client would refuse it on every retry, and its
// siblings must not wait for it.
func (r *Receiver) publish(req *http.Request, src signal.Source, m *sourceMetrics, batch *signal.Batch) (publishResult, []signal.Rejection, error) {
	var (
		res      publishResult
		tooLarge []signal.Rejection
	)
	enc := r.newEncoder(req, min(len(batch.Signals), publishChunk))
	maxPayload := r.pub.MaxPayload()
	pstart := time.Now()
	defer func() { r.metrics.publish.Observe(time.Since(pstart).Seconds()) }()
	for lo := 0; lo < len(batch.Signals); lo += publishChunk {
		chunk := batch.Signals[lo:min(lo+publishChunk, len(batch.Signals))]
		outs := enc.outs[:0]
		for i := range chunk {
			s := &chunk[i]
			out, err := enc.output(s, len(outs))
			if err != nil {
				return res, tooLarge, &encodeError{err}
			}
			if size := out.Size(); maxPayload > 0 && int64(size) > maxPayload {
				idx := lo + i
				if lo+i < len(batch.Indexes) {
					idx = batch.Indexes[lo+i]
				}
				tooLarge = append(tooLarge, signal.Rejection{Index: idx, Name: s.Name,
					Reason: fmt.Sprintf("encoded signal of %d bytes exceeds the bus's max payload of %d bytes; shorten its labels or annotations", size, maxPayload)})
				r.log.WarnContext(req.Context(), "alert rejected: its encoded signal exceeds the bus's max payload",
					"source", src, "index", idx, "name", s.Name, "fingerprint", s.Fingerprint, "bytes", size, "max_payload", maxPayload)
				continue
			}
			outs = append(outs, out)
		}
		got, err := r.pub.Publish(req.Context(), outs...)
		if err != nil {
			res.unsettled = len(outs) + len(batch.Signals) - lo - len(chunk)
			return res, tooLarge, err
		}
		res.Duplicates += got.Duplicates
		// The bus has copied the messages: their slots are reused.
		clear(outs)
	}
	return res, tooLarge, nil
}

// recordRefused records the items of a request that do not become
// signals, rejected or ignored, for review (incident.Audit on
// <prefix>.audit.receiver): the sender got the reasons in the answer, and
// this keeps them beside the signals that were accepted, so `stormweir
// explain rejected|ignored` can say what became of them. The signals do
// not wait for it; a record that cannot be stored is counted and logged.
func (r *Receiver) recordRefused(ctx context.Context, src signal.Source, batch *signal.Batch) {
	if len(batch.Rejected) == 0 && len(batch.Ignored) == 0 {
		return
	}
	now := r.clk.Now()
	outs := make([]bus.Output, 0, len(batch.Rejected)+len(batch.Ignored))
	add := func(kind incident.AuditKind, items []signal.Rejection) {
		for _, rj := range items {
			out, err := bus.AuditOutput(r.subjects, "receiver", &incident.Audit{
				Kind: kind, Time: now, Source: string(src), Index: rj.Index, Name: rj.Name, Reason: rj.Reason,
			}, "")
			if err != nil {
				continue
			}
			outs = append(outs, out)
		}
	}
	add(incident.AuditRejected, batch.Rejected)
	add(incident.AuditIgnored, batch.Ignored)
	if _, err := r.pub.Publish(ctx, outs...); err != nil {
		r.metrics.auditLost.Add(float64(len(outs)))
		r.log.Warn("records of rejected and ignored items not stored", "items", len(outs), "err", err)
	}
}

// appendJSON appends r without rejections as encoding/json (through an
// Encoder) writes it.
func (r Response) appendJSON(b []byte) []byte {
	b = append(b, `{"accepted":`...)
	b = strconv.AppendInt(b, int64(r.Accepted), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(r.Duplicates), 10)
	b = append(b, `,"rejected":[],"ignored":`...)
	b = strconv.AppendInt(b, int64(r.Ignored), 10)
	if r.Truncated != 0 {
		b = append(b, `,"truncated":`...)
		b = strconv.AppendInt(b, int64(r.Truncated), 10)
	}
	return append(b, "}\n"...)
}

// encoder builds the bus messages of one request's signals. Every
// message carries the same trace context (the receive span's, which
// continues the request's traceparent; a new one when tracing is off and
// the request has none) and receipt time: their header values are built
// once (the bus only reads them).
type encoder struct {
	subjects      bus.Subjects
	tpv           []string
	src, received []string
	srcOf         signal.Source
	receivedAt    time.Time
	subject       string
	// outs and fingerprints are one chunk's messages and fingerprint
	// header values, reused from chunk to chunk.
	outs         []bus.Output
	fingerprints []string
}

func (r *Receiver) newEncoder(req *http.Request, chunk int) *encoder {
	tp := tracing.Traceparent(req.Context())
	if tp == "" {
		tp = newTraceparent()
	}
	return &encoder{subjects: r.subjects, tpv: []string{tp}, outs: make([]bus.Output, 0, chunk), fingerprints: make([]string, chunk)}
}

// output encodes s as the i-th message of the chunk.
func (e *encoder) output(s *signal.Signal, i int) (bus.Output, error) {
	data, err := signal.Encode(s)
	if err != nil {
		return bus.Output{}, err
	}
	if e.src == nil || s.Source != e.srcOf {
		e.srcOf, e.src, e.subject = s.Source, []string{string(s.Source)}, e.subjects.Signals(s.Source)
	}
	if e.received == nil || !s.ReceivedAt.Equal(e.receivedAt) || s.ReceivedAt.Location() != e.receivedAt.Location() {
		e.receivedAt, e.received = s.ReceivedAt, []string{s.ReceivedAt.Format(time.RFC3339Nano)}
	}
	e.fingerprints[i] = s.Fingerprint
	h := make(nats.Header, 5) // and Nats-Msg-Id, added by the publisher
	h[bus.HeaderFingerprint] = e.fingerprints[i : i+1 : i+1]
	h[bus.HeaderSource] = e.src
	h[bus.HeaderTraceparent] = e.tpv
	h[bus.HeaderReceivedAt] = e.received
	return bus.Output{Subject: e.subject, Data: data, MsgID: s.ID, Header: h}, nil
}

func writeProblem(w http.ResponseWriter, code int, title, detail string, rejected []signal.Rejection) int {
	return writeJSON(w, code, "application/problem+json", problem{
		Type: "about:blank", Title: title, Status: code, Detail: detail, Rejected: rejected,
	})
}

func writeJSON(w http.ResponseWriter, code int, contentType string, v any) int {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
	return code
}

// newTraceparent starts a trace for a request that brought none while
// tracing is off, so its signals can still be followed through the logs.
func newTraceparent() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}
