package writer

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/clock"
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
//
// Time: spacings are measured on the injected clock, and one timer of
// that clock (in run) serves every request waiting for its spacing, so a
// fake clock decides exactly when each write happens. Ownership: every
// flush runs in the flushes group under flushCtx; run ends them at
// shutdown (a bounded drain, then cancel) before it returns.
type coalescer struct {
	c            client.Client
	fieldManager string
	interval     time.Duration
	maxInterval  time.Duration
	clk          clock.Clock
	calls        *apiCalls
	m            *metrics
	log          *slog.Logger

	// flushes are the writes in progress. flushCtx is theirs: run
	// cancels it at shutdown once the drain budget is spent.
	flushes sync.WaitGroup
	// written records a status write of subject's revision rev, for
	// review; called by the flush after its waiters were released.
	written func(ctx context.Context, key types.NamespacedName, subject string, rev int64)

	flushCtx    context.Context
	stopFlushes context.CancelFunc

	mu      sync.Mutex
	entries map[types.NamespacedName]*entry
	// due holds the entries waiting for their spacing, soonest first.
	due dueQueue
	// timer (set by run) fires at the sooner of due's first time and
	// nextSweep. Whoever changes either re-arms it at once, under mu, so
	// once an update waits, the timer is armed for it.
	timer     clock.Timer
	nextSweep time.Time
	// closed: run has stopped; no flush starts any more.
	closed bool
}

type entry struct {
	key types.NamespacedName
	// Guarded by coalescer.mu.
	pending  []*pendingMutation
	inflight []*pendingMutation
	flushing bool
	// due is when the pending updates are written; index is the entry's
	// place in coalescer.due, -1 when it is not waiting there.
	due       time.Time
	index     int
	urgent    bool // a pending update skips the spacing
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

func newCoalescer(c client.Client, fieldManager string, interval, maxInterval time.Duration, calls *apiCalls, clk clock.Clock, m *metrics, log *slog.Logger) *coalescer {
	co := &coalescer{
		c: c, fieldManager: fieldManager, interval: interval, maxInterval: max(interval, maxInterval), clk: clk,
		calls: calls, m: m, log: log, entries: map[types.NamespacedName]*entry{},
	}
	co.flushCtx, co.stopFlushes = context.WithCancel(context.Background())
	return co
}

func (co *coalescer) newEntry(key types.NamespacedName) *entry {
	return &entry{key: key, index: -1, spacing: co.interval}
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
	e := co.newEntry(key)
	e.loaded, e.base, e.lastFlush = true, owned(&rr.Status), co.clk.Now()
	co.entries[key] = e
}

// submit queues u for the request key and waits until a write that
// includes it succeeded (or failed: the result's err). The result's
// changed is false when u changed nothing (an old or repeated revision)
// or was superseded; nothing was written for it then.
func (co *coalescer) submit(ctx context.Context, key types.NamespacedName, u update) submitResult {
	co.mu.Lock()
	e := co.entries[key]
	if e == nil {
		e = co.newEntry(key)
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

// schedule starts a flush of e now, or queues e to be started by run
// when its spacing (the base interval when an urgent update waits) has
// passed since the last write. Called with co.mu held.
func (co *coalescer) schedule(e *entry) {
	if e.flushing || len(e.pending) == 0 || co.closed {
		return
	}
	spacing := e.spacing
	if e.urgent {
		spacing = co.interval
	}
	due := e.lastFlush.Add(spacing)
	now := co.clk.Now()
	if due.After(now) {
		switch {
		case e.index < 0:
			e.due = due
			heap.Push(&co.due, e)
		case due.Before(e.due):
			// An urgent update moved the write forward.
			e.due = due
			heap.Fix(&co.due, e.index)
		default:
			return
		}
		if e.index == 0 {
			co.rearmLocked(now)
		}
		return
	}
	if e.index >= 0 {
		heap.Remove(&co.due, e.index)
	}
	e.flushing = true
	co.flushes.Go(func() { co.flush(e) })
}

// rearmLocked points run's timer at the sooner of the first due write and
// the next sweep. co.mu held; nothing to do before run started.
func (co *coalescer) rearmLocked(now time.Time) {
	if co.timer == nil {
		return
	}
	at := co.nextSweep
	if len(co.due) > 0 && co.due[0].due.Before(at) {
		at = co.due[0].due
	}
	// A timer that fired meanwhile only makes run look again.
	co.timer.Reset(at.Sub(now))
}

// startDueLocked starts the flushes due by now; co.mu held.
func (co *coalescer) startDueLocked(now time.Time) {
	for len(co.due) > 0 && !co.due[0].due.After(now) {
		co.schedule(heap.Pop(&co.due).(*entry))
	}
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
		now := co.clk.Now()
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
	if err == nil && wrote && co.written != nil {
		for i, pm := range batch {
			if changed[i] {
				co.written(co.flushCtx, e.key, pm.subject, pm.rev)
			}
		}
	}
}

// write applies batch on top of the request's status and writes the
// result, re-reading and retrying on a resourceVersion conflict.
func (co *coalescer) write(e *entry, batch []*pendingMutation) (changed []bool, wrote bool, err error) {
	// Each attempt may queue for an API slot before its own timeout starts;
	// the extra minute bounds that queueing. At shutdown run cancels
	// flushCtx once the drain budget is spent.
	ctx, cancel := context.WithTimeout(co.flushCtx, time.Duration(maxConflictRetries+1)*co.calls.timeout+time.Minute)
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
// server-side apply under the writer's field manager, as a typed apply
// configuration (encoded once, by the client). The request has no status
// subresource (so that a create can carry the first status), which makes
// this an apply to the request itself naming only status fields; the CRD
// keeps spec immutable.
func (co *coalescer) apply(ctx context.Context, key types.NamespacedName, st *v1alpha1.RemediationRequestStatus) error {
	return co.calls.do(ctx, func(ctx context.Context) error {
		// Built per call: the client decodes the answer into it.
		return co.c.Apply(ctx, statusApply(key, st), client.FieldOwner(co.fieldManager), client.ForceOwnership)
	})
}

// sweep forgets requests idle for longer than idle, bounding memory to the
// requests being updated.
func (co *coalescer) sweep(idle time.Duration) {
	co.mu.Lock()
	defer co.mu.Unlock()
	for k, e := range co.entries {
		if !e.flushing && e.index < 0 && len(e.pending) == 0 && co.clk.Since(e.lastFlush) > idle {
			delete(co.entries, k)
		}
	}
}

// sweepInterval is how often run forgets idle requests (and calls also).
const sweepInterval = time.Minute

// run starts the flushes of waiting requests when their spacing has
// passed, and every sweepInterval forgets idle requests and calls also,
// all on one timer of the clock, until ctx ends. Then it lets the flushes
// in progress finish within drain, cancels the rest and waits for them:
// no write outlives run. Updates still waiting for their spacing are not
// written; their messages are not acked and come back.
func (co *coalescer) run(ctx context.Context, drain time.Duration, also func()) error {
	co.mu.Lock()
	now := co.clk.Now()
	co.nextSweep = now.Add(sweepInterval)
	co.timer = co.clk.NewTimer(sweepInterval)
	co.startDueLocked(now)
	co.rearmLocked(now)
	co.mu.Unlock()
	defer co.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			co.stop(drain)
			return nil
		case <-co.timer.C():
		}
		now := co.clk.Now()
		co.mu.Lock()
		sweep := !now.Before(co.nextSweep)
		co.mu.Unlock()
		if sweep {
			co.sweep(2*co.maxInterval + sweepInterval)
			also()
		}
		co.mu.Lock()
		if sweep {
			co.nextSweep = now.Add(sweepInterval)
		}
		co.startDueLocked(now)
		co.rearmLocked(now)
		co.mu.Unlock()
	}
}

// stop closes the coalescer and ends its flushes: those in progress get
// drain to finish, then their context is canceled.
func (co *coalescer) stop(drain time.Duration) {
	co.mu.Lock()
	co.closed = true
	co.mu.Unlock()
	done := make(chan struct{})
	go func() {
		co.flushes.Wait()
		close(done)
	}()
	// The drain budget bounds API calls in progress: wall-clock time.
	budget := time.NewTimer(drain)
	defer budget.Stop()
	select {
	case <-done:
	case <-budget.C:
		co.log.Warn("status writes still running at shutdown; canceling them", "budget", drain)
	}
	co.stopFlushes()
	<-done
}

// dueQueue is a heap of entries by due time (container/heap).
type dueQueue []*entry

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q dueQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *dueQueue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *dueQueue) Pop() any {
	old := *q
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	e.index = -1
	*q = old[:n-1]
	return e
}
