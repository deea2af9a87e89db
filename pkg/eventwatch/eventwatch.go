// Package eventwatch is stormweir's Kubernetes event source: it watches
// Warning events in the API server with a client-go informer and publishes
// each change of an event as a signal on <prefix>.signals.kubernetes-event,
// the subject the receiver publishes posted events on, so a cluster needs
// no event exporter (DESIGN §2). Events are converted by the receiver's
// own decoder (signal.Decoder), so a watched event and a posted one become
// the same signal, with the same id.
//
// Every replica may watch. Publications of one event occurrence share a
// msg-id (the event's uid, count and last time), so JetStream's duplicate
// window keeps one of them, and the deduper's seen marks and per-event
// counts keep one count beyond it. The watcher keeps no checkpoint of its
// own: after a restart its informer lists every event as it stands now and
// publishes each again, and those ids make the re-publication count
// nothing, while every count the watcher missed while it was down is in
// the listed event's count (DESIGN §2, "The event watcher").
package eventwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Name names the watcher in logs, metrics and readiness.
const Name = "watcher"

// Publisher stores signals on the bus; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, outs ...bus.Output) (bus.PublishResult, error)
}

// Options are the watcher's dependencies.
type Options struct {
	// Config is the whole configuration: the watcher section, the bus
	// prefix and the fingerprint fields.
	Config config.Config
	// RestConfig reaches the API server; the watcher uses a copy with
	// watcher.qps and watcher.burst.
	RestConfig *rest.Config
	// Publisher stores the signals (the process's one publisher).
	Publisher Publisher
	// Registry takes the watcher's metrics.
	Registry prometheus.Registerer
	// Log is the process's logger.
	Log *slog.Logger
	// Clock is the time of receipt stamped on signals; the wall clock
	// when nil.
	Clock clock.Clock
}

// Watcher is the event source. New wires it without starting anything;
// Run watches until its context ends.
type Watcher struct {
	cfg       config.Watcher
	subject   string
	decoder   *signal.Decoder
	pub       Publisher
	log       *slog.Logger
	m         *metrics
	reasons   map[string]bool
	factories []informers.SharedInformerFactory
	// indexers holds each namespace's cache ("" for all namespaces).
	indexers map[string]cache.Indexer
	queue    workqueue.TypedRateLimitingInterface[string]
	synced   []cache.InformerSynced
}

type metrics struct {
	events  *prometheus.CounterVec
	publish *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_watcher_events_total",
			Help: "Kubernetes event changes the watcher saw, by result: published (stored now or before), filtered (reason not in watcher.reasons), rejected (not convertible, see the log).",
		}, []string{"result"}),
		publish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stormweir_watcher_publish_total",
			Help: "Signals the watcher published, by result: stored, duplicate (JetStream had it by msg-id: another replica or a relist), failed (retried with backoff).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.events, m.publish)
	return m
}

// New builds a watcher: one informer per namespace of watcher.namespaces
// (one for all namespaces when none is named), each listing and watching
// only Warning events. It contacts nothing until Run.
func New(o Options) (*Watcher, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	fp, err := signal.NewFingerprinter(o.Config.Fingerprint.Labels)
	if err != nil {
		return nil, err
	}
	wc := o.Config.Watcher
	rc := rest.CopyConfig(o.RestConfig)
	rc.QPS, rc.Burst = wc.QPS, wc.Burst
	rc.UserAgent = "stormweir-watcher"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("watcher: kubernetes client: %w", err)
	}
	w := &Watcher{
		cfg:      wc,
		subject:  bus.NewSubjects(o.Config.Bus.Prefix).Signals(signal.SourceKubernetesEvent),
		decoder:  signal.NewDecoder(fp, o.Clock.Now),
		pub:      o.Publisher,
		log:      o.Log.With("component", Name),
		m:        newMetrics(o.Registry),
		indexers: map[string]cache.Indexer{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "stormweir-watcher"}),
	}
	if len(wc.Reasons) > 0 {
		w.reasons = map[string]bool{}
		for _, r := range wc.Reasons {
			w.reasons[r] = true
		}
	}
	namespaces := wc.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		// No resync: a resync re-delivers unchanged events, which would
		// only be absorbed again downstream.
		f := informers.NewSharedInformerFactoryWithOptions(cs, 0,
			informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
				// Only Warning events leave the API server; Normal ones
				// never become signals.
				lo.FieldSelector = "type=" + corev1.EventTypeWarning
			}),
			informers.WithTransform(stripManagedFields))
		inf := f.Core().V1().Events().Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    w.enqueue,
			UpdateFunc: func(_, obj any) { w.enqueue(obj) },
		}); err != nil {
			return nil, fmt.Errorf("watcher: adding event handler: %w", err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(w.watchError(ns)); err != nil {
			return nil, fmt.Errorf("watcher: setting watch error handler: %w", err)
		}
		w.factories = append(w.factories, f)
		w.indexers[ns] = inf.GetIndexer()
		w.synced = append(w.synced, inf.HasSynced)
	}
	return w, nil
}

// stripManagedFields drops what the watcher never reads from the cache.
func stripManagedFields(obj any) (any, error) {
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		a.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}

// watchError logs a failed list or watch (a missing RBAC grant, an API
// server away); the informer retries with backoff.
func (w *Watcher) watchError(ns string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return
		}
		where := "every namespace"
		if ns != "" {
			where = "namespace " + ns
		}
		w.log.Warn("watching events failed; retrying", "namespaces", where, "err", err)
	}
}

// enqueue queues an event by namespace/name: the worker reads its newest
// state from the cache, so several changes of one event waiting together
// publish once, with the newest count.
func (w *Watcher) enqueue(obj any) {
	e, ok := obj.(*corev1.Event)
	if !ok {
		return
	}
	if w.reasons != nil && !w.reasons[e.Reason] {
		w.m.events.WithLabelValues("filtered").Inc()
		return
	}
	key, err := cache.MetaNamespaceKeyFunc(e)
	if err != nil {
		return
	}
	w.queue.Add(key)
}

// Run starts the informers and publishes event changes until ctx ends;
// then it stops the informers and waits for them. A publish that fails
// (the bus away) is retried with backoff while ctx lasts; one still
// pending at shutdown is published again by the next start's list.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		w.queue.ShutDown()
		wg.Wait()
		for _, f := range w.factories {
			f.Shutdown()
		}
	}()
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		// Shutting the queue down ends the worker's wait for an item.
		w.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		return nil // ctx ended before the first list
	}
	w.log.Info("watching Warning events", "namespaces", namespaceList(w.cfg.Namespaces), "reasons", w.cfg.Reasons)
	for w.next(ctx) {
	}
	return nil
}

func namespaceList(ns []string) []string {
	if len(ns) == 0 {
		return []string{"*"}
	}
	return slices.Clone(ns)
}

// next publishes one queued event; false once the queue is shut down.
func (w *Watcher) next(ctx context.Context) bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	if err := w.publish(ctx, key); err != nil {
		if ctx.Err() == nil {
			w.log.Warn("publishing event failed; retrying", "event", key, "err", err)
		}
		w.queue.AddRateLimited(key)
		return true
	}
	w.queue.Forget(key)
	return true
}

// publish converts the cached event of key and publishes it. An event
// gone from the cache (deleted) publishes nothing.
func (w *Watcher) publish(ctx context.Context, key string) error {
	ns, _, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	idx := w.indexers[ns]
	if idx == nil {
		idx = w.indexers[metav1.NamespaceAll]
	}
	obj, ok, err := idx.GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	s, reason, err := w.convert(obj.(*corev1.Event))
	if err != nil || reason != "" {
		w.m.events.WithLabelValues("rejected").Inc()
		w.log.Warn("event not published", "event", key, "reason", reason, "err", err)
		return nil
	}
	data, err := signal.Encode(s)
	if err != nil {
		w.m.events.WithLabelValues("rejected").Inc()
		w.log.Warn("event not published", "event", key, "err", err)
		return nil
	}
	h := make(nats.Header, 3)
	h.Set(bus.HeaderFingerprint, s.Fingerprint)
	h.Set(bus.HeaderSource, string(s.Source))
	h.Set(bus.HeaderReceivedAt, s.ReceivedAt.Format(time.RFC3339Nano))
	res, err := w.pub.Publish(ctx, bus.Output{Subject: w.subject, Data: data, MsgID: s.ID, Header: h})
	if err != nil {
		w.m.publish.WithLabelValues("failed").Inc()
		return fmt.Errorf("publishing signal %s: %w", s.ID, err)
	}
	w.m.events.WithLabelValues("published").Inc()
	if res.Duplicates > 0 {
		w.m.publish.WithLabelValues("duplicate").Inc()
	} else {
		w.m.publish.WithLabelValues("stored").Inc()
	}
	return nil
}

// convert turns a typed event into its signal through the receiver's
// decoder: the event is encoded as the API server serves it (what an
// exporter posts), so both paths share one conversion and one signal id.
// A reason is returned for an event the decoder rejects.
func (w *Watcher) convert(e *corev1.Event) (*signal.Signal, string, error) {
	ev := *e
	ev.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Event"}
	body, err := json.Marshal(&ev)
	if err != nil {
		return nil, "", fmt.Errorf("encoding event: %w", err)
	}
	b, err := w.decoder.DecodeKubernetesEvents(body)
	if err != nil {
		return nil, "", err
	}
	switch {
	case len(b.Signals) == 1:
		return &b.Signals[0], "", nil
	case len(b.Rejected) > 0:
		return nil, b.Rejected[0].Reason, nil
	default:
		return nil, "not a Warning event", nil
	}
}
