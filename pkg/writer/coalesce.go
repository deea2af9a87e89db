package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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
// a write is in flight or within the request's spacing of the last one,
// updates wait and ride on the next write together. The spacing starts at
// interval and doubles, up to maxInterval, for as long as the request is
// written again within maxInterval of its spacing running out: a request
// under a storm or a duplicate flood costs the API server one write per
// maxInterval, while a quiet request's next update is written at once.
// Urgent updates (see update) wait for the base interval only.
//
// Delivery guarantee: submit returns only after a write that includes its
// mutation succeeded (or after it was found to change nothing, or was
// superseded), so the caller may ack its message; on failure every waiter
// of that flush gets the error and its message is redelivered.
//
// Supersession: events carry absolute values and a revision, so a
// pending or in-flight update of a subject (incident or storm) at
// revision r makes every update of that subject below r redundant. Such
// an update returns at once, without waiting for the write, and so does a
// pending one that a newer update replaces: the newer update's message is
// not acked until its write succeeded, and a redelivery of it carries
// everything the older one did. An update at the same revision is the same
// message delivered again; it waits with the first delivery. This is what
// keeps a flood on one request from holding a handler per message for the
// whole spacing.
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
	maxInterval  time.Duration
	calls        *apiCalls
	m            *metrics
	log          *slog.Logger

	mu      sync.Mutex
	entries map[types.NamespacedName]*entry
}

type entry struct {
	key types.NamespacedName
	// Guarded by coalescer.mu.
	pending   []*pendingMutation
	inflight  []*pendingMutation
	flushing  bool
	timer     *time.Timer
	due       time.Time // when timer fires
	urgent    bool      // a pending update skips the spacing
	lastFlush time.Time
	// spacing is the least time between two writes; see coalescer.
	spacing time.Duration

	// Owned by the one running flush (or set by seed before any flush).
	loaded bool
	base   v1alpha1.RemediationRequestStatus
}

// update is one status update: mut brings the request's status to
// subject's revision rev. An urgent update (a signal resolved, a storm
// closed) is written after the base interval, not the busy spacing: those
// are the changes a reader must not wait for.
type update struct {
	subject string
	rev     int64
	urgent  bool
	mut     mutation
}

type pendingMutation struct {
	update
	// done is closed once res is set; every waiter (the update's own
	// caller and any redelivery of the same message) reads res.
	done chan struct{}
	res  submitResult
}

// finish sets pm's result and releases its waiters.
func (pm *pendingMutation) finish(r submitResult) {
	pm.res = r
	close(pm.done)
}

// submitResult is what became of one update.
type submitResult struct {
	// changed: a write carried the update.
	changed bool
	// superseded: a newer revision of the same subject carries it.
	superseded bool
	err        error
}

func newCoalescer(c client.Client, fieldManager string, interval, maxInterval time.Duration, m *metrics, log *slog.Logger) *coalescer {
	return &coalescer{
		c: c, fieldManager: fieldManager, interval: interval, maxInterval: max(interval, maxInterval),
		calls: newAPICalls(10 * time.Second), m: m, log: log, entries: map[types.NamespacedName]*entry{},
	}
}

// seed records the state of a request the writer just created (with its
// status), so its next write needs no read. The create counts as a write:
// the next update waits for the spacing, riding with the ones after it.
func (co *coalescer) seed(rr *v1alpha1.RemediationRequest) {
	key := client.ObjectKeyFromObject(rr)
	co.mu.Lock()
	defer co.mu.Unlock()
	if _, ok := co.entries[key]; ok {
		return
	}
	co.entries[key] = &entry{key: key, loaded: true, base: owned(&rr.Status), lastFlush: time.Now(), spacing: co.interval}
}

// submit queues u for the request key and waits until a write that
// includes it succeeded (or failed: the result's err). The result's
// changed is false when u changed nothing (an old or repeated revision)
// or was superseded; nothing was written for it then.
func (co *coalescer) submit(ctx context.Context, key types.NamespacedName, u update) submitResult {
	co.mu.Lock()
	e := co.entries[key]
	if e == nil {
		e = &entry{key: key, spacing: co.interval}
		co.entries[key] = e
	}
	pm, stale := co.matchLocked(e, u)
	if stale {
		co.mu.Unlock()
		return submitResult{}
	}
	if pm == nil {
		pm = &pendingMutation{update: u, done: make(chan struct{})}
		e.pending = append(e.pending, pm)
		e.urgent = e.urgent || u.urgent
		co.schedule(e)
	}
	co.mu.Unlock()
	select {
	case <-pm.done:
		return pm.res
	case <-ctx.Done():
		// The mutation may still be written; it is idempotent, and the
		// message is redelivered because it is not acked.
		return submitResult{err: fmt.Errorf("waiting for status write of %s: %w", key, ctx.Err())}
	}
}

// matchLocked compares u with the pending and in-flight updates of its
// subject. There is at most one pending update per subject.
//
//   - One at a newer revision makes u stale: it changes nothing that
//     write does not, and that write's message is acked only after it.
//   - One at u's revision is u's own message delivered again (a message
//     has one revision), so u waits for that update's outcome: acking the
//     redelivery early would ack the very message whose write is still to
//     come, and a failed write would then be lost.
//   - A pending one at an older revision is superseded by u: it is
//     released (its caller may ack) and dropped.
//
// Called with co.mu held.
func (co *coalescer) matchLocked(e *entry, u update) (same *pendingMutation, stale bool) {
	for _, pm := range e.inflight {
		if pm.subject == u.subject && pm.rev >= u.rev {
			if pm.rev == u.rev {
				return pm, false
			}
			return nil, true
		}
	}
	for i, pm := range e.pending {
		if pm.subject != u.subject {
			continue
		}
		switch {
		case pm.rev == u.rev:
			return pm, false
		case pm.rev > u.rev:
			return nil, true
		}
		pm.finish(submitResult{superseded: true})
		co.m.coalesced.Inc()
		e.pending = slices.Delete(e.pending, i, i+1)
		return nil, false
	}
	return nil, false
}

// schedule starts a flush of e now or when its spacing (the base interval
// when an urgent update waits) has passed since the last write. Called
// with co.mu held.
func (co *coalescer) schedule(e *entry) {
	if e.flushing || len(e.pending) == 0 {
		return
	}
	spacing := e.spacing
	if e.urgent {
		spacing = co.interval
	}
	due := e.lastFlush.Add(spacing)
	if e.timer != nil {
		if !due.Before(e.due) {
			return
		}
		// An urgent update moved the write forward.
		e.timer.Stop()
		e.timer = nil
	}
	if wait := time.Until(due); wait > 0 {
		var t *time.Timer
		t = time.AfterFunc(wait, func() {
			co.mu.Lock()
			defer co.mu.Unlock()
			if e.timer != t {
				return // stopped and replaced while waiting for the lock
			}
			e.timer = nil
			co.schedule(e)
		})
		e.timer, e.due = t, due
		return
	}
	e.flushing = true
	go co.flush(e)
}

func (co *coalescer) flush(e *entry) {
	co.mu.Lock()
	batch := e.pending
	e.pending, e.inflight, e.urgent = nil, batch, false
	co.mu.Unlock()

	changed, wrote, err := co.write(e, batch)

	co.mu.Lock()
	e.flushing, e.inflight = false, nil
	if wrote {
		now := time.Now()
		if !e.lastFlush.IsZero() && now.Sub(e.lastFlush) <= e.spacing+co.maxInterval {
			// Written again soon after its spacing ran out: a busy
			// request. (Comparing with maxInterval alone would reset
			// the spacing of a request written at exactly maxInterval.)
			e.spacing = min(2*e.spacing, co.maxInterval)
		} else {
			e.spacing = co.interval
		}
		e.lastFlush = now
	}
	if err != nil {
		// The state of the request is unknown now; read it again next time.
		e.loaded = false
	}
	co.schedule(e)
	co.mu.Unlock()
	for i, pm := range batch {
		pm.finish(submitResult{changed: err == nil && changed[i], err: err})
	}
}

// write applies batch on top of the request's status and writes the
// result, re-reading and retrying on a resourceVersion conflict.
func (co *coalescer) write(e *entry, batch []*pendingMutation) (changed []bool, wrote bool, err error) {
	// Each attempt may queue for an API slot before its own timeout starts;
	// the extra minute bounds that queueing.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(maxConflictRetries+1)*co.calls.timeout+time.Minute)
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
	var rr v1alpha1.RemediationRequest
	if err := co.calls.do(ctx, func(ctx context.Context) error { return co.c.Get(ctx, e.key, &rr) }); err != nil {
		return classify(fmt.Errorf("reading remediation request %s: %w", e.key, err))
	}
	e.base, e.loaded = owned(&rr.Status), true
	return nil
}

// apply writes st, the whole of stormweir's status fields, with
// server-side apply under the writer's field manager. The request has no
// status subresource (so that a create can carry the first status), which
// makes this an apply to the request itself naming only status fields;
// the CRD keeps spec immutable.
func (co *coalescer) apply(ctx context.Context, key types.NamespacedName, st *v1alpha1.RemediationRequestStatus) error {
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
	return co.calls.do(ctx, func(ctx context.Context) error {
		return co.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(co.fieldManager), client.ForceOwnership)
	})
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
			co.sweep(2*co.maxInterval + time.Minute)
			also()
		}
	}
}
