package writer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/record"
)

// ender ends the incident of every request that reaches a terminal phase:
// it removes the incident records (the request's own incident and those
// folded into it), so the next firing of the fingerprint opens a new
// incident and a new request, and it remembers the request as the
// fingerprint's latest finished one (for the next request's
// previousRequestRef). Then it marks the request ended (LabelEnded), which
// takes it out of the writer's cache: the cache holds the active requests
// and the terminal ones still to end, never the finished ones. Storm
// requests end no incident record (the aggregator owns storms) but are
// marked all the same.
//
// It is driven by the request informer and a rate-limited work queue, so
// a Redis or API outage only delays the ending, and a restart ends every
// terminal request not yet marked (End is idempotent). The queue (which
// runs goroutines of its own) lives from open to close, within the
// writer's Run.
type ender struct {
	store interface {
		record.Ender
		record.Finishes
	}
	cache client.Reader
	// mark sets LabelEnded on the request.
	mark     func(ctx context.Context, key types.NamespacedName) error
	terminal map[string]bool
	// ttl is how long the store remembers a finished request.
	ttl   time.Duration
	queue workqueue.TypedRateLimitingInterface[types.NamespacedName]
	m     *metrics
	log   *slog.Logger
	// ended records, for review, that rr's incidents ended.
	ended func(ctx context.Context, rr *v1alpha1.RemediationRequest)

	mu sync.Mutex
	// done holds the terminal requests whose incidents this process ended
	// but which are not marked yet, by uid and the number of incidents
	// ended, so a retry of the mark ends nothing twice. An entry goes when
	// the marked request leaves the cache.
	done map[types.UID]int
}

func newEnder(store interface {
	record.Ender
	record.Finishes
}, cache client.Reader, mark func(context.Context, types.NamespacedName) error, terminal map[string]bool, ttl time.Duration, m *metrics, log *slog.Logger) *ender {
	return &ender{
		store: store, cache: cache, mark: mark, terminal: terminal, ttl: ttl, m: m, log: log,
		done: map[types.UID]int{},
	}
}

// open creates the work queue; the handler feeds it from then on.
func (en *ender) open() {
	en.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "stormweir-writer-ender"})
}

// close shuts the queue down (again, when run already did).
func (en *ender) close() { en.queue.ShutDown() }

// handler is the informer event handler feeding the queue.
func (en *ender) handler() toolscache.ResourceEventHandler {
	enqueue := func(obj any) {
		if rr, ok := obj.(*v1alpha1.RemediationRequest); ok && en.terminal[rr.Status.Phase] {
			en.queue.Add(client.ObjectKeyFromObject(rr))
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		// A request leaves the cache when it is deleted or marked ended.
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if rr, ok := obj.(*v1alpha1.RemediationRequest); ok {
				en.mu.Lock()
				delete(en.done, rr.UID)
				en.mu.Unlock()
			}
		},
	}
}

// run works the queue until ctx ends.
func (en *ender) run(ctx context.Context) error {
	// The queue's Get blocks without a context: shutting the queue down
	// is what ends the loop. The goroutine that does it is awaited.
	var stopper sync.WaitGroup
	stopper.Go(func() {
		<-ctx.Done()
		en.queue.ShutDown()
	})
	defer stopper.Wait()
	for {
		key, shutdown := en.queue.Get()
		if shutdown {
			return nil
		}
		if err := en.end(ctx, key); err != nil {
			en.log.Warn("ending incident failed; will retry", "request", key.String(), "err", err)
			en.queue.AddRateLimited(key)
		} else {
			en.queue.Forget(key)
		}
		en.queue.Done(key)
	}
}

func (en *ender) end(ctx context.Context, key types.NamespacedName) error {
	var rr v1alpha1.RemediationRequest
	if err := en.cache.Get(ctx, key, &rr); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading request %s from cache: %w", key, err)
	}
	if !en.terminal[rr.Status.Phase] || rr.Labels[v1alpha1.LabelEnded] == "true" {
		return nil
	}
	if rr.Spec.Storm == nil {
		if err := en.endIncidents(ctx, &rr); err != nil {
			return err
		}
	}
	if err := en.mark(ctx, key); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("marking request %s ended: %w", key, err)
	}
	return nil
}

// endIncidents ends rr's incidents and remembers rr as its fingerprint's
// latest finished request, once per process.
func (en *ender) endIncidents(ctx context.Context, rr *v1alpha1.RemediationRequest) error {
	ids := []string{rr.Spec.IncidentID}
	for _, f := range rr.Status.FoldedIncidents {
		ids = append(ids, f.IncidentID)
	}
	en.mu.Lock()
	n := en.done[rr.UID]
	en.mu.Unlock()
	if n == len(ids) {
		return nil
	}
	key := client.ObjectKeyFromObject(rr)
	for _, id := range ids {
		if err := en.store.End(ctx, rr.Spec.Fingerprint, id); err != nil {
			return fmt.Errorf("ending incident %s of %s: %w", id, rr.Spec.Fingerprint, err)
		}
	}
	f := record.Finished{Namespace: rr.Namespace, Name: rr.Name, IncidentID: rr.Spec.IncidentID, Phase: rr.Status.Phase}
	if err := en.store.SetFinished(ctx, rr.Spec.Fingerprint, f, en.ttl); err != nil {
		return err
	}
	en.mu.Lock()
	en.done[rr.UID] = len(ids)
	en.mu.Unlock()
	en.m.ended.Add(float64(len(ids)))
	en.log.Info("request reached a terminal phase; incident ended", "request", key.String(),
		"phase", rr.Status.Phase, "fingerprint", rr.Spec.Fingerprint, "incidents", len(ids))
	if en.ended != nil {
		en.ended(ctx, rr)
	}
	return nil
}

// endedPatch sets LabelEnded; a merge patch of one label leaves every
// other field (and metadata.generation) as it is.
var endedPatch = client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelEnded+`":"true"}}}`))

// markEnded marks the request key ended, which takes it out of the
// writer's cache.
func (w *Writer) markEnded(ctx context.Context, key types.NamespacedName) error {
	return w.co.calls.do(ctx, func(ctx context.Context) error {
		rr := &v1alpha1.RemediationRequest{}
		rr.Namespace, rr.Name = key.Namespace, key.Name
		return w.client.Patch(ctx, rr, endedPatch, client.FieldOwner(w.cfg.FieldManager))
	})
}
