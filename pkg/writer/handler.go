package writer

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Cache index names on RemediationRequests.
const (
	// indexFingerprint maps spec.fingerprint to requests (full value: the
	// label carries only a prefix).
	indexFingerprint = "stormweir.fingerprint"
	// indexIncident maps spec.incidentID and every folded incident id to
	// the request that counts it.
	indexIncident = "stormweir.incident"
)

// Handle is the writer's bus.Handler: it turns one incident or storm event
// into at most one create and one (coalesced) status write. It never
// publishes outputs; the message is acked once the write is done. Every
// incident event it gets is of an individual incident (the aggregator
// routes the others), so an open and an update differ only in what they
// count.
func (w *Writer) Handle(ctx context.Context, m *bus.Msg) ([]bus.Output, error) {
	switch m.Subject {
	case w.subj.IncidentsOpen(), w.subj.IncidentsUpdate():
		var e incident.Event
		if err := incident.Unmarshal(m.Data, &e); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decoding incident event: %w", err))
		}
		if e.IncidentID == "" || e.Fingerprint == "" {
			return nil, bus.Permanent(errors.New("incident event without incidentID or fingerprint"))
		}
		if e.Route != incident.RouteIndividual {
			// The aggregator routes; an event that did not come through
			// it as individual would make a request a storm already counts.
			return nil, bus.Permanent(fmt.Errorf("incident %s: event routed %q, not individually", e.IncidentID, e.Route))
		}
		return nil, w.handleEvent(ctx, m, &e)
	case w.subj.IncidentsStorm():
		var s incident.Storm
		if err := incident.Unmarshal(m.Data, &s); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decoding storm event: %w", err))
		}
		if s.StormID == "" || s.Fingerprint == "" {
			return nil, bus.Permanent(errors.New("storm event without stormID or fingerprint"))
		}
		return nil, w.handleStorm(ctx, m, &s)
	}
	return nil, bus.Permanent(fmt.Errorf("writer: unexpected subject %s", m.Subject))
}

// handleEvent writes an individual incident's event: into the request
// that counts the incident, created first when there is none yet (an
// update may overtake its incident's open event; either creates it).
func (w *Writer) handleEvent(ctx context.Context, m *bus.Msg, e *incident.Event) error {
	log := w.log.With("incident", e.IncidentID, "fingerprint", e.Fingerprint, "revision", e.Revision)
	host, own, err := w.hostOf(ctx, e.IncidentID)
	if err != nil {
		return err
	}
	current := w.latest(ctx, e)
	if host == nil && !current {
		// The incident is no longer its fingerprint's current one: it may
		// have ended, and an ended request is not in the cache.
		if host, own, err = w.endedHost(ctx, e.Fingerprint, e.IncidentID); err != nil {
			return err
		}
	}
	created := false
	if host == nil {
		if host, own, created, err = w.ensureOnce(ctx, e); err != nil {
			return err
		}
		if created {
			// The create carried e's status: nothing left to write.
			w.observeLatency(m)
			return nil
		}
	}
	mut, fold := applyOwn(e), &foldResult{}
	if !own {
		mut = applyFolded(e, fold)
	}
	res := w.co.submit(ctx, *host, update{subject: e.IncidentID, rev: e.Revision, urgent: e.State == incident.StateResolved, mut: mut})
	if res.err != nil {
		return res.err
	}
	changed := res.changed
	switch {
	case res.superseded:
		// A newer revision of the incident carries this one.
	case fold.full:
		w.m.skipped.WithLabelValues(skipFoldFull).Inc()
		log.WarnContext(ctx, "request's folded incident list is full; incident not counted", "request", host.String())
	case changed && fold.appended:
		w.m.folded.Inc()
		log.InfoContext(ctx, "incident folded into the active request of its fingerprint", "request", host.String())
	case !changed:
		w.m.skipped.WithLabelValues(skipStale).Inc()
	}
	if changed {
		w.observeLatency(m)
	}
	return nil
}

// latest brings e to its incident record's newest state when the record
// (the deduper's truth, absolute values under one revision counter) is
// ahead of it. Under a backlog the writer reads an incident's events long
// after they were decided; writing the newest values at once makes the
// events queued behind this one stale (acked without a write) instead of
// costing a write each. A record that is gone or moved on to another
// incident leaves e as it is: its own values are still correct. So does a
// failed read: the refresh saves writes, it is never needed to be right,
// and the writer does not wait for Redis to write what it already has.
//
// It reports whether e's incident may still be its fingerprint's current
// one: false only when the record is gone or another incident's.
func (w *Writer) latest(ctx context.Context, e *incident.Event) (current bool) {
	rec, err := w.records.Get(ctx, e.Fingerprint)
	if errors.Is(err, record.ErrNotFound) {
		return false
	}
	if err != nil {
		return true
	}
	if record.Refresh(e, &rec) {
		w.m.refreshed.Inc()
	}
	return rec.IncidentID == e.IncidentID
}

// endedHost finds, with one read of the API server, the request that
// counts incident id among those of its fingerprint, for an incident that
// is not in the cache and no longer its fingerprint's current one: its
// request may have finished and been marked ended, which takes it out of
// the cache. An event decided before the end (a backlog) then still
// counts in that request, as it did before the end, instead of opening a
// second one. nil when there is none (an incident that expired before its
// request was written, say).
func (w *Writer) endedHost(ctx context.Context, fp, id string) (*types.NamespacedName, bool, error) {
	var list v1alpha1.RemediationRequestList
	err := w.co.calls.do(ctx, func(ctx context.Context) error {
		return w.client.List(ctx, &list, client.MatchingLabels{v1alpha1.LabelFingerprint: FingerprintLabel(fp)})
	})
	if err != nil {
		return nil, false, classify(fmt.Errorf("looking up the finished requests of fingerprint %s: %w", fp, err))
	}
	for i := range list.Items {
		rr := &list.Items[i]
		if rr.Spec.Fingerprint != fp || rr.Spec.Storm != nil {
			continue
		}
		counts := rr.Spec.IncidentID == id
		for _, f := range rr.Status.FoldedIncidents {
			counts = counts || f.IncidentID == id
		}
		if !counts {
			continue
		}
		key := client.ObjectKeyFromObject(rr)
		w.hosts.remember(id, key, rr.Spec.IncidentID == id)
		return &key, rr.Spec.IncidentID == id, nil
	}
	return nil, false, nil
}

// ensureOnce finds or creates the request that counts incident e (see
// ensure), once for all its concurrent handlers.
func (w *Writer) ensureOnce(ctx context.Context, e *incident.Event) (*types.NamespacedName, bool, bool, error) {
	return w.once(e.IncidentID, func() (*types.NamespacedName, bool, bool, error) { return w.ensure(ctx, e) })
}

// once runs find (which returns the request counting id, whether it is
// id's own, and whether this call created it) once for all concurrent
// handlers of id, since a burst of one incident's or storm's events would
// otherwise race to create the same request, and remembers the result
// until the cache has caught up. created is reported to the handler whose
// call ran find only: its event is the one the create carried.
func (w *Writer) once(id string, find func() (*types.NamespacedName, bool, bool, error)) (key *types.NamespacedName, own, created bool, err error) {
	type result struct {
		key          *types.NamespacedName
		own, created bool
	}
	first := false
	v, err, _ := w.ensuring.Do(id, func() (any, error) {
		first = true
		key, own, created, err := find()
		if err != nil {
			return nil, err
		}
		w.hosts.remember(id, *key, own)
		return result{key, own, created}, nil
	})
	if err != nil {
		return nil, false, false, err
	}
	r := v.(result)
	return r.key, r.own, r.created && first, nil
}

// hostOf finds the request counting incident id (its own, or the one it
// was folded into): first among the requests this process just created
// or folded into, then in the cache. nil when neither has it; the cache
// may lag a create by another replica, which the create's AlreadyExists
// then covers.
func (w *Writer) hostOf(ctx context.Context, id string) (*types.NamespacedName, bool, error) {
	if key, own, ok := w.hosts.lookup(id); ok {
		return &key, own, nil
	}
	var list v1alpha1.RemediationRequestList
	if err := w.cache.List(ctx, &list, client.MatchingFields{indexIncident: id}); err != nil {
		return nil, false, fmt.Errorf("looking up the request of incident %s: %w", id, err)
	}
	if len(list.Items) == 0 {
		return nil, false, nil
	}
	rr := &list.Items[0]
	key := client.ObjectKeyFromObject(rr)
	return &key, rr.Spec.IncidentID == id, nil
}

// ensure returns the request that counts incident e: the active request
// of its fingerprint when there is one (e is folded into it), else its own,
// created now. Creating is idempotent by name. Only a create reads the
// event's signal.
func (w *Writer) ensure(ctx context.Context, e *incident.Event) (key *types.NamespacedName, own, created bool, err error) {
	active, previous, err := w.byFingerprint(ctx, e.Fingerprint)
	if err != nil {
		return nil, false, false, err
	}
	if active != nil {
		k := client.ObjectKeyFromObject(active)
		return &k, active.Spec.IncidentID == e.IncidentID, false, nil
	}
	var sig signal.Signal
	if err := signal.Decode(e.Signal, &sig); err != nil {
		return nil, false, false, bus.Permanent(fmt.Errorf("incident %s: %w", e.IncidentID, err))
	}
	pl, err := w.place(ctx, &sig, sig.Target.Namespace, sig.Namespace)
	if err != nil {
		return nil, false, false, err
	}
	rr := newRequest(e.IncidentID, e.Fingerprint, &sig, pl, w.cfg.MaxAnnotationBytes, e.FirstSeen)
	// The create carries the event's status: one API write per new request.
	applyOwn(e)(&rr.Status)
	if rr.Spec.PreviousRequestRef, err = w.previousRef(ctx, e.Fingerprint, previous); err != nil {
		return nil, false, false, err
	}
	created, err = w.create(ctx, rr)
	if err != nil {
		return nil, false, false, err
	}
	k := client.ObjectKeyFromObject(rr)
	return &k, true, created, nil
}

// previousRef names the latest finished request of fp: cached is the
// latest terminal one still in the cache (not ended yet), else the store
// remembers the one ended last. A store that cannot answer fails the
// create, to be retried: spec is immutable, so a reference left out now
// could never be added.
func (w *Writer) previousRef(ctx context.Context, fp string, cached *v1alpha1.RemediationRequest) (*v1alpha1.RequestRef, error) {
	if cached != nil {
		return &v1alpha1.RequestRef{
			Name: cached.Name, Namespace: cached.Namespace,
			IncidentID: cached.Spec.IncidentID, Phase: cached.Status.Phase,
		}, nil
	}
	f, err := w.records.LastFinished(ctx, fp)
	if errors.Is(err, record.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &v1alpha1.RequestRef{Name: f.Name, Namespace: f.Namespace, IncidentID: f.IncidentID, Phase: f.Phase}, nil
}

// byFingerprint returns, from the cache, the active (non-terminal) request
// of fp, the oldest if there were several, and the latest terminal one not
// yet ended (ended requests are not cached).
func (w *Writer) byFingerprint(ctx context.Context, fp string) (active, previous *v1alpha1.RemediationRequest, err error) {
	var list v1alpha1.RemediationRequestList
	if err := w.cache.List(ctx, &list, client.MatchingFields{indexFingerprint: fp}); err != nil {
		return nil, nil, fmt.Errorf("listing requests of fingerprint %s: %w", fp, err)
	}
	older := func(a, b *v1alpha1.RemediationRequest) bool {
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	}
	for i := range list.Items {
		rr := &list.Items[i]
		if rr.DeletionTimestamp != nil {
			continue
		}
		if w.terminal[rr.Status.Phase] {
			if previous == nil || older(previous, rr) {
				previous = rr
			}
		} else if active == nil || older(rr, active) {
			active = rr
		}
	}
	return active, previous, nil
}

// place decides the request's namespace and classification. The first
// non-empty namespace is the signal's; when it does not exist (or is
// terminating) the request goes to the fallback namespace, with the origin
// kept in a label and an annotation.
func (w *Writer) place(ctx context.Context, sig *signal.Signal, namespaces ...string) (placement, error) {
	ns := ""
	for _, n := range namespaces {
		if n != "" {
			ns = n
			break
		}
	}
	env, envRule, err := w.classifier.EnvironmentRule(ctx, ns)
	if err != nil {
		return placement{}, err
	}
	prio, prioRule := w.classifier.PriorityRule(string(sig.Severity), env)
	pl := placement{namespace: ns, environment: env, priority: prio, envRule: envRule, prioRule: prioRule}
	usable, err := w.namespaceUsable(ctx, ns)
	if err != nil {
		return placement{}, err
	}
	if !usable {
		ok, err := w.namespaceUsable(ctx, w.cfg.FallbackNamespace)
		if err != nil {
			return placement{}, err
		}
		if !ok {
			return placement{}, bus.Permanent(fmt.Errorf("namespace %q does not exist and neither does the fallback namespace %q", ns, w.cfg.FallbackNamespace))
		}
		pl.namespace, pl.origin = w.cfg.FallbackNamespace, ns
	}
	return pl, nil
}

func (w *Writer) namespaceUsable(ctx context.Context, ns string) (bool, error) {
	if ns == "" {
		return false, nil
	}
	var obj corev1.Namespace
	err := w.cache.Get(ctx, types.NamespacedName{Name: ns}, &obj)
	if apierrors.IsNotFound(err) {
		// The cache may not have seen a namespace created a moment ago;
		// ask the API server before sending the request to the fallback.
		// This costs a read only when the namespace is missing from the
		// cache, and only for a create, never per repeated signal.
		err = w.co.calls.do(ctx, func(ctx context.Context) error {
			return w.client.Get(ctx, types.NamespacedName{Name: ns}, &obj)
		})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
	}
	if err != nil {
		return false, classify(fmt.Errorf("reading namespace %s: %w", ns, err))
	}
	return obj.DeletionTimestamp == nil && obj.Status.Phase != corev1.NamespaceTerminating, nil
}

// create creates rr; AlreadyExists means an earlier delivery did, which is
// success. It reports whether this call created it.
func (w *Writer) create(ctx context.Context, rr *v1alpha1.RemediationRequest) (bool, error) {
	err := w.co.calls.do(ctx, func(ctx context.Context) error {
		return w.client.Create(ctx, rr, client.FieldOwner(w.cfg.FieldManager))
	})
	switch {
	case err == nil:
		w.m.created.Inc()
		w.co.seed(rr)
		w.log.InfoContext(ctx, "remediation request created", "request", rr.Namespace+"/"+rr.Name,
			"incident", rr.Spec.IncidentID, "fingerprint", rr.Spec.Fingerprint,
			"environment", rr.Spec.Environment, "priority", rr.Spec.Priority)
		w.record(ctx, &incident.Audit{
			Kind: incident.AuditWritten, Time: w.clock.Now(), IncidentID: rr.Spec.IncidentID, Fingerprint: rr.Spec.Fingerprint,
			Request: rr.Namespace + "/" + rr.Name, Operation: incident.WriteCreated, Revision: rr.Status.ObservedRevision,
			Environment: rr.Spec.Environment, EnvironmentRule: rr.Annotations[v1alpha1.AnnotationEnvironmentRule],
			Priority: rr.Spec.Priority, PriorityRule: rr.Annotations[v1alpha1.AnnotationPriorityRule],
			FallbackFrom: rr.Annotations[v1alpha1.AnnotationOriginNamespace],
		}, "created:"+rr.Namespace+"/"+rr.Name)
		return true, nil
	case apierrors.IsAlreadyExists(err):
		return false, nil
	case apierrors.IsNotFound(err), apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		// The namespace went away after the cache said it was there; the
		// retry places the request in the fallback namespace.
		return false, fmt.Errorf("creating remediation request %s/%s: %w", rr.Namespace, rr.Name, err)
	}
	return false, classify(fmt.Errorf("creating remediation request %s/%s: %w", rr.Namespace, rr.Name, err))
}

func (w *Writer) handleStorm(ctx context.Context, m *bus.Msg, s *incident.Storm) error {
	host, _, err := w.hostOf(ctx, s.StormID)
	if err != nil {
		return err
	}
	if host == nil {
		created := false
		host, _, created, err = w.once(s.StormID, func() (*types.NamespacedName, bool, bool, error) {
			var sig signal.Signal
			if err := signal.Decode(s.Signal, &sig); err != nil {
				return nil, false, false, bus.Permanent(fmt.Errorf("storm %s: %w", s.StormID, err))
			}
			pl, err := w.place(ctx, &sig, s.Scope["namespace"], sig.Target.Namespace, sig.Namespace)
			if err != nil {
				return nil, false, false, err
			}
			rr := newStormRequest(s, &sig, pl, w.cfg.MaxAnnotationBytes)
			applyStorm(s)(&rr.Status)
			created, err := w.create(ctx, rr)
			if err != nil {
				return nil, false, false, err
			}
			k := client.ObjectKeyFromObject(rr)
			return &k, true, created, nil
		})
		if err != nil {
			return err
		}
		if created {
			// The create carried this event's status.
			w.observeLatency(m)
			return nil
		}
	}
	res := w.co.submit(ctx, *host, update{subject: s.StormID, rev: s.Revision, urgent: !s.ClosedAt.IsZero(), mut: applyStorm(s)})
	if res.err != nil {
		return res.err
	}
	if !res.changed && !res.superseded {
		w.m.skipped.WithLabelValues(skipStale).Inc()
	}
	if res.changed {
		w.observeLatency(m)
	}
	return nil
}

// record publishes a write record for review (incident.Audit). It is
// published after the write and is not needed for any decision, so a
// failure is logged and counted, never retried into a second write.
func (w *Writer) record(ctx context.Context, a *incident.Audit, msgID string) {
	out, err := bus.AuditOutput(w.subj, Stage, a, msgID)
	if err == nil {
		_, err = w.pub.Publish(ctx, out)
	}
	if err != nil {
		w.m.auditLost.Inc()
		w.log.Warn("write record not stored", "request", a.Request, "incident", a.IncidentID, "err", err)
	}
}

// written records a coalesced status write of subject (an incident or
// storm id) at revision rev.
func (w *Writer) written(ctx context.Context, key types.NamespacedName, subject string, rev int64) {
	w.record(ctx, &incident.Audit{
		Kind: incident.AuditWritten, Time: w.clock.Now(), IncidentID: subject,
		Request: key.String(), Operation: incident.WriteUpdated, Revision: rev,
	}, fmt.Sprintf("updated:%s:%s:%d", key, subject, rev))
}

// endedRecord records that the remediation controller set rr's terminal
// phase and its incidents ended.
func (w *Writer) endedRecord(ctx context.Context, rr *v1alpha1.RemediationRequest) {
	w.record(ctx, &incident.Audit{
		Kind: incident.AuditEnded, Time: w.clock.Now(), IncidentID: rr.Spec.IncidentID, Fingerprint: rr.Spec.Fingerprint,
		Request: rr.Namespace + "/" + rr.Name, Phase: rr.Status.Phase,
	}, "ended:"+string(rr.UID))
}

// observeLatency records receipt → write for the message's signal.
func (w *Writer) observeLatency(m *bus.Msg) {
	v := m.Header.Get(bus.HeaderReceivedAt)
	if v == "" {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return
	}
	w.m.latency.Observe(w.clock.Now().Sub(t).Seconds())
}
