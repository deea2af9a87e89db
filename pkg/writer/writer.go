// Package writer is the writer stage (DESIGN §5): it consumes incident and
// storm events and keeps exactly one RemediationRequest per real incident
// in the Kubernetes API, classified by environment and priority, with its
// status (occurrences, signal state, storm members) written by server-side
// apply under stormweir's own field manager and coalesced per request.
//
// Delivery: a message is acked only after the Kubernetes write that carries
// it succeeded. Creates are idempotent by name (the incident id), status
// writes by revision, so a redelivered or reordered message changes
// nothing.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/service"
)

// Stage is the writer's name: its durable consumer, metrics label and DLQ
// subject.
const Stage = bus.ConsumerWriter

// Scheme returns a scheme with the core types and stormweir.io/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// ErrNoCluster says that no cluster is configured anywhere the writer
// looks for one.
var ErrNoCluster = errors.New("no Kubernetes cluster configured: no writer.kubeconfig (--kubeconfig), no $KUBECONFIG, no ~/.kube/config, and not running in a pod")

// RestConfig loads the API server configuration: writer.kubeconfig when
// set, else the usual places (in-cluster, KUBECONFIG, ~/.kube/config).
func RestConfig(cfg config.Writer) (*rest.Config, error) {
	if cfg.Kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", cfg.Kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := ctrlconfig.GetConfig()
	if clientcmd.IsEmptyConfig(err) {
		// client-go's own message points at KUBERNETES_MASTER, a variable
		// nobody sets any more; say where a cluster was looked for.
		return nil, ErrNoCluster
	}
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return rc, nil
}

// Records is what the writer needs of the incident records: to read an
// incident's newest state, to end an incident whose request reached a
// terminal phase, and to remember each fingerprint's latest finished
// request (which the writer does not keep in memory).
type Records interface {
	record.Reader
	record.Ender
	record.Finishes
}

// Options are the writer's dependencies.
type Options struct {
	// Process provides configuration, logger, metrics, health and the bus.
	Process *service.Process
	// Records are the incident records.
	Records Records
	// RestConfig reaches the API server. The writer uses a copy with
	// writer.qps, writer.burst and a request-counting transport.
	RestConfig *rest.Config
	// Clock is the time of write spacings, the host memo's expiry and
	// receipt → write latency; the wall clock when nil.
	Clock clock.Clock
}

// Writer is the writer stage.
type Writer struct {
	cfg        config.Writer
	records    Records
	clock      clock.Clock
	log        *slog.Logger
	subj       bus.Subjects
	m          *metrics
	client     client.Client
	cache      cache.Cache
	disco      discovery.DiscoveryInterface
	classifier *Classifier
	co         *coalescer
	ender      *ender
	terminal   map[string]bool
	// ensuring and hosts make the create of a request happen once per
	// incident in this process, however many of its messages arrive at once.
	ensuring singleflight.Group
	hosts    *hostMemo
	synced   atomic.Bool
	worker   *bus.Worker
	// pub records the writes for review (incident.Audit).
	pub *bus.Publisher
	// drain bounds the writes still in progress at shutdown
	// (worker.drain_timeout).
	drain time.Duration
}

// New wires the writer and creates or updates its durable consumer; it
// starts nothing and calls no Kubernetes API until Run.
func New(ctx context.Context, o Options) (*Writer, error) {
	if o.Process == nil || o.Records == nil || o.RestConfig == nil {
		return nil, errors.New("writer: needs a process, the incident records and a rest config")
	}
	cfg := o.Process.Config.Writer
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	w := &Writer{
		cfg: cfg, records: o.Records, clock: o.Clock, drain: o.Process.Config.Worker.DrainTimeout,
		log:      o.Process.Log.With("stage", Stage),
		subj:     bus.NewSubjects(o.Process.Config.Bus.Prefix),
		m:        newMetrics(o.Process.Registry),
		terminal: map[string]bool{},
		hosts:    newHostMemo(time.Minute, o.Clock),
		pub:      o.Process.Publisher(),
	}
	for _, ph := range cfg.TerminalPhases {
		w.terminal[ph] = true
	}

	rc := rest.CopyConfig(o.RestConfig)
	rc.QPS, rc.Burst = cfg.QPS, cfg.Burst
	rc.UserAgent = "stormweir-writer"
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &countingTransport{next: rt, api: w.m.api}
	})
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("building api client: %w", err)
	}
	scheme := Scheme()
	// Namespaces are cached whole (environment and existence checks);
	// the override ConfigMap alone is cached when one is configured.
	// Requests are cached until they are ended (LabelEnded, set by the
	// ender once a terminal request's incidents have ended): the writer
	// needs the active ones (the request of an incident, the fold target
	// of a fingerprint) and the terminal ones still to end, so its memory
	// follows the active requests and stays flat in the finished ones,
	// which a cluster keeps by the hundred thousand. What it needs of a
	// finished request later (previousRequestRef, an event arriving after
	// its incident ended) comes from Redis or one API read.
	notEnded, err := labels.NewRequirement(v1alpha1.LabelEnded, selection.DoesNotExist, nil)
	if err != nil {
		return nil, fmt.Errorf("selecting requests not ended: %w", err)
	}
	byObject := map[client.Object]cache.ByObject{
		&v1alpha1.RemediationRequest{}: {Label: labels.NewSelector().Add(*notEnded)},
	}
	if ref := cfg.Environment.OverrideConfigMap; ref != "" {
		ns, name, _ := strings.Cut(ref, "/")
		byObject[&corev1.ConfigMap{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{ns: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", name),
		}
	}
	// Managed fields are dropped from cached objects: the writer never
	// reads them, and since a create carries status they list every spec
	// and status field, a large share of each cached request's memory.
	if w.cache, err = cache.New(rc, cache.Options{
		HTTPClient: hc, Scheme: scheme, ByObject: byObject, ReaderFailOnMissingInformer: true,
		DefaultTransform: cache.TransformStripManagedFields(),
	}); err != nil {
		return nil, fmt.Errorf("building informer cache: %w", err)
	}
	// Writes and the rare live reads go straight to the API server.
	if w.client, err = client.New(rc, client.Options{HTTPClient: hc, Scheme: scheme}); err != nil {
		return nil, fmt.Errorf("building api client: %w", err)
	}
	if w.disco, err = discovery.NewDiscoveryClientForConfigAndClient(rc, hc); err != nil {
		return nil, fmt.Errorf("building discovery client: %w", err)
	}
	if w.classifier, err = NewClassifier(cfg, w.cache); err != nil {
		return nil, err
	}
	w.co = newCoalescer(w.client, cfg.FieldManager, cfg.CoalesceInterval, cfg.CoalesceMaxInterval, newAPICalls(cfg.RequestTimeout), o.Clock, w.m, w.log)
	w.co.written = w.written
	w.ender = newEnder(o.Records, w.cache, w.markEnded, w.terminal, cfg.PreviousRequestTTL, w.m, w.log)
	w.ender.ended = w.endedRecord
	// Handlers wait for the coalesced write that covers their message, so
	// the writer runs far more of them than CPU-bound stages
	// (writer.concurrency).
	if w.worker, err = o.Process.Worker(ctx, service.WorkerSpec{
		Consumer:    bus.PipelineConsumer(w.subj, bus.ConsumerWriter),
		Handler:     w,
		Concurrency: cfg.Concurrency,
		Span:        "remediation request write",
	}); err != nil {
		return nil, err
	}

	o.Process.Health.AddCheck("kubernetes", w.checkAPI)
	o.Process.Health.AddCheck(Stage, w.checkReady)
	return w, nil
}

func (w *Writer) checkAPI(ctx context.Context) error {
	return w.disco.RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
}

func (w *Writer) checkReady(context.Context) error {
	if !w.synced.Load() {
		return errors.New("informer caches not synced")
	}
	return nil
}

// Client is the writer's API client (direct, uncached), for tests and
// tools that inspect what the writer wrote.
func (w *Writer) Client() client.Client { return w.client }

// Run starts the informers, waits for them to sync, then consumes until ctx
// ends. At shutdown the worker drains first: in-flight messages finish
// their writes, so the coalescer and the caches keep running until it is
// done. Then the coalescer ends its writes (bounded by
// worker.drain_timeout) and the caches stop; every goroutine Run started
// has ended when it returns.
func (w *Writer) Run(ctx context.Context) error {
	w.ender.open()
	defer w.ender.close()
	if err := w.setupInformers(ctx); err != nil {
		return err
	}
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	var cacheRun sync.WaitGroup
	cacheErr := make(chan error, 1)
	cacheRun.Go(func() { cacheErr <- w.cache.Start(cacheCtx) })
	defer cacheRun.Wait()
	defer stopCache()
	if !w.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("writer: informer caches did not sync")
	}
	w.synced.Store(true)

	g, gctx := errgroup.WithContext(ctx)
	// The coalescer stops only once the worker has drained: the handlers
	// still finishing wait for its writes.
	coCtx, stopCo := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCo()
	g.Go(func() error {
		defer stopCo()
		return w.worker.Run(gctx)
	})
	g.Go(func() error { return w.co.run(coCtx, w.drain, w.hosts.prune) })
	g.Go(func() error { return w.ender.run(gctx) })
	g.Go(func() error {
		select {
		case err := <-cacheErr:
			return fmt.Errorf("writer: informer cache stopped: %w", err)
		case <-gctx.Done():
			return nil
		}
	})
	return g.Wait()
}

// setupInformers registers the informers and indexes before the cache
// starts: namespaces, requests (with the fingerprint and incident indexes
// and the terminal-phase handler) and the override ConfigMap.
func (w *Writer) setupInformers(ctx context.Context) error {
	rr := &v1alpha1.RemediationRequest{}
	if err := w.cache.IndexField(ctx, rr, indexFingerprint, func(o client.Object) []string {
		return []string{o.(*v1alpha1.RemediationRequest).Spec.Fingerprint}
	}); err != nil {
		return fmt.Errorf("indexing requests by fingerprint: %w", err)
	}
	if err := w.cache.IndexField(ctx, rr, indexIncident, func(o client.Object) []string {
		r := o.(*v1alpha1.RemediationRequest)
		ids := []string{r.Spec.IncidentID}
		for _, f := range r.Status.FoldedIncidents {
			ids = append(ids, f.IncidentID)
		}
		return ids
	}); err != nil {
		return fmt.Errorf("indexing requests by incident: %w", err)
	}
	inf, err := w.cache.GetInformer(ctx, rr, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("watching remediation requests: %w", err)
	}
	if _, err := inf.AddEventHandler(w.ender.handler()); err != nil {
		return fmt.Errorf("watching remediation requests: %w", err)
	}
	if _, err := w.cache.GetInformer(ctx, &corev1.Namespace{}, cache.BlockUntilSynced(false)); err != nil {
		return fmt.Errorf("watching namespaces: %w", err)
	}
	if w.cfg.Environment.OverrideConfigMap != "" {
		if _, err := w.cache.GetInformer(ctx, &corev1.ConfigMap{}, cache.BlockUntilSynced(false)); err != nil {
			return fmt.Errorf("watching the environment override configmap: %w", err)
		}
	}
	return nil
}
