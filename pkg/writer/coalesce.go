package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
)

// maxConflictRetries bounds the re-read-and-reapply loop of one flush when
// another writer replica moved the request ahead of this one's view.
const maxConflictRetries = 5

// errRevisionRegress is the message of the CRD rule that rejects a status
// write whose observedRevision is below the stored one.
const errRevisionRegress = "observedRevision must not decrease"

// coalescer gathers status updates per RemediationRequest and writes them
// with one server-side apply per flush. The first update to an idle
// request is written at once (no added latency for a new incident); while
// a write is in flight or within interval of the last one, updates wait
// and ride on the next write together. That is how a flood of 1,000
// occurrences becomes a handful of writes.
//
// Delivery guarantee: Submit returns only after a write that includes its
// mutation succeeded (or after it was found to change nothing), so the
// caller may ack its message; on failure every waiter of that flush gets
// the error and its message is redelivered.
//
// Writes carry no resourceVersion, so the remediation controller's writes
// to status.phase never make them conflict. What keeps two writer replicas
// (or a stale view) from moving status backwards is the CRD's rule that
// observedRevision never decreases: a rejected write makes the flush
// re-read the request and re-run its mutations, which are revision guarded
// and therefore safe to re-run.
type coalescer struct {
	c            client.Client
	fieldManager string
	interval     time.Duration
	requestTO    time.Duration
	m            *metrics
	log          *slog.Logger

	mu      sync.Mutex
	entries map[types.NamespacedName]*entry
}

type entry struct {
	key types.NamespacedName
	// Guarded by coalescer.mu.
	pending   []*pendingMutation
	flushing  bool
	timer     *time.Timer
	lastFlush time.Time

	// Owned by the one running flush (or set by seed before any flush).
	loaded bool
	base   v1alpha1.RemediationRequestStatus
}

type pendingMutation struct {
	mut  mutation
	done chan flushResult
}

type flushResult struct {
	changed bool
	err     error
}

func newCoalescer(c client.Client, fieldManager string, interval time.Duration, m *metrics, log *slog.Logger) *coalescer {
	return &coalescer{
		c: c, fieldManager: fieldManager, interval: interval, requestTO: 10 * time.Second,
		m: m, log: log, entries: map[types.NamespacedName]*entry{},
	}
}

// seed records the state of a request the writer just created, so its
// first status write needs no read.
func (co *coalescer) seed(rr *v1alpha1.RemediationRequest) {
	key := client.ObjectKeyFromObject(rr)
	co.mu.Lock()
	defer co.mu.Unlock()
	if _, ok := co.entries[key]; ok {
		return
	}
	co.entries[key] = &entry{key: key, loaded: true, base: owned(&rr.Status)}
}

// submit queues mut for the request key and waits until a write that
// includes it succeeded. changed is false when mut changed nothing (an
// old or repeated revision), in which case nothing was written for it.
func (co *coalescer) submit(ctx context.Context, key types.NamespacedName, mut mutation) (changed bool, err error) {
	pm := &pendingMutation{mut: mut, done: make(chan flushResult, 1)}
	co.mu.Lock()
	e := co.entries[key]
	if e == nil {
		e = &entry{key: key}
		co.entries[key] = e
	}
	e.pending = append(e.pending, pm)
	co.schedule(e)
	co.mu.Unlock()
	select {
	case r := <-pm.done:
		return r.changed, r.err
	case <-ctx.Done():
		// The mutation may still be written; it is idempotent, and the
		// message is redelivered because it is not acked.
		return false, fmt.Errorf("waiting for status write of %s: %w", key, ctx.Err())
	}
}

// schedule starts a flush of e now or when interval has passed since the
// last one. Called with co.mu held.
func (co *coalescer) schedule(e *entry) {
	if e.flushing || e.timer != nil || len(e.pending) == 0 {
		return
	}
	wait := co.interval - time.Since(e.lastFlush)
	if wait <= 0 {
		e.flushing = true
		go co.flush(e)
		return
	}
	e.timer = time.AfterFunc(wait, func() {
		co.mu.Lock()
		defer co.mu.Unlock()
		e.timer = nil
		co.schedule(e)
	})
}

func (co *coalescer) flush(e *entry) {
	co.mu.Lock()
	batch := e.pending
	e.pending = nil
	co.mu.Unlock()

	changed, wrote, err := co.write(e, batch)

	co.mu.Lock()
	e.flushing = false
	if wrote {
		e.lastFlush = time.Now()
	}
	if err != nil {
		// The state of the request is unknown now; read it again next time.
		e.loaded = false
	}
	co.schedule(e)
	co.mu.Unlock()
	for i, pm := range batch {
		pm.done <- flushResult{changed: err == nil && changed[i], err: err}
	}
}

// write applies batch on top of the request's status and writes the
// result, re-reading and retrying on a resourceVersion conflict.
func (co *coalescer) write(e *entry, batch []*pendingMutation) (changed []bool, wrote bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(maxConflictRetries+1)*co.requestTO)
	defer cancel()
	changed = make([]bool, len(batch))
	for attempt := 0; ; attempt++ {
		if !e.loaded {
			if err := co.load(ctx, e); err != nil {
				return nil, false, err
			}
		}
		st := *e.base.DeepCopy()
		n := 0
		for i, pm := range batch {
			changed[i] = pm.mut(&st)
			if changed[i] {
				n++
			}
		}
		if n == 0 {
			return changed, false, nil
		}
		err := co.apply(ctx, e.key, &st)
		if err == nil {
			e.base = st
			co.m.updated.Inc()
			co.m.coalesced.Add(float64(n - 1))
			return changed, true, nil
		}
		if (apierrors.IsConflict(err) || apierrors.IsInvalid(err) && strings.Contains(err.Error(), errRevisionRegress)) && attempt < maxConflictRetries {
			e.loaded = false
			continue
		}
		return nil, false, classify(fmt.Errorf("writing status of remediation request %s: %w", e.key, err))
	}
}

func (co *coalescer) load(ctx context.Context, e *entry) error {
	ctx, cancel := context.WithTimeout(ctx, co.requestTO)
	defer cancel()
	var rr v1alpha1.RemediationRequest
	if err := co.c.Get(ctx, e.key, &rr); err != nil {
		return classify(fmt.Errorf("reading remediation request %s: %w", e.key, err))
	}
	e.base, e.loaded = owned(&rr.Status), true
	return nil
}

// apply writes st, the whole of stormweir's status fields, with
// server-side apply under the writer's field manager.
func (co *coalescer) apply(ctx context.Context, key types.NamespacedName, st *v1alpha1.RemediationRequestStatus) error {
	ctx, cancel := context.WithTimeout(ctx, co.requestTO)
	defer cancel()
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	var status map[string]any
	if err := json.Unmarshal(raw, &status); err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "RemediationRequest",
		"metadata":   map[string]any{"name": key.Name, "namespace": key.Namespace},
		"status":     status,
	}}
	return co.c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(co.fieldManager), client.ForceOwnership)
}

// sweep forgets requests idle for longer than idle, bounding memory to the
// requests being updated.
func (co *coalescer) sweep(idle time.Duration) {
	co.mu.Lock()
	defer co.mu.Unlock()
	for k, e := range co.entries {
		if !e.flushing && e.timer == nil && len(e.pending) == 0 && time.Since(e.lastFlush) > idle {
			delete(co.entries, k)
		}
	}
}

// run sweeps idle entries, and calls also, every minute until ctx ends.
func (co *coalescer) run(ctx context.Context, also func()) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			co.sweep(2*co.interval + time.Minute)
			also()
		}
	}
}
