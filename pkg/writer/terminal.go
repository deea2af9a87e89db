package writer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

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
// folded into it), so the next firing of the
// fingerprint opens a new incident and a new request. It is driven by the
// request informer and a rate-limited work queue, so a Redis outage only
// delays the ending, and a restart re-ends every terminal request once
// (End is idempotent). The queue (which runs goroutines of its own) lives
// from open to close, within the writer's Run.
type ender struct {
	store    record.Ender
	cache    client.Reader
	terminal map[string]bool
	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName]
	m        *metrics
	log      *slog.Logger
	// ended records, for review, that rr's incidents ended.
	ended func(ctx context.Context, rr *v1alpha1.RemediationRequest)

	mu sync.Mutex
	// done holds the requests ended by this process, by uid and the number
	// of incidents ended, so resyncs cost nothing.
	done map[types.UID]int
}

func newEnder(store record.Ender, cache client.Reader, terminal map[string]bool, m *metrics, log *slog.Logger) *ender {
	return &ender{
		store: store, cache: cache, terminal: terminal, m: m, log: log,
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
		if rr, ok := obj.(*v1alpha1.RemediationRequest); ok && en.terminal[rr.Status.Phase] && rr.Spec.Storm == nil {
			en.queue.Add(client.ObjectKeyFromObject(rr))
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
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
	if !en.terminal[rr.Status.Phase] {
		return nil
	}
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
	for _, id := range ids {
		if err := en.store.End(ctx, rr.Spec.Fingerprint, id); err != nil {
			return fmt.Errorf("ending incident %s of %s: %w", id, rr.Spec.Fingerprint, err)
		}
	}
	en.mu.Lock()
	en.done[rr.UID] = len(ids)
	en.mu.Unlock()
	en.m.ended.Add(float64(len(ids)))
	en.log.Info("request reached a terminal phase; incident ended", "request", key.String(),
		"phase", rr.Status.Phase, "fingerprint", rr.Spec.Fingerprint, "incidents", len(ids))
	if en.ended != nil {
		en.ended(ctx, &rr)
	}
	return nil
}
