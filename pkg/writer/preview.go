package writer

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Preview decides what the writer would write, without a cluster: the
// all-in-one mode's output when no cluster answers. It takes the writer's
// decisions from the same code (placement order, request and status
// builders, revision-guarded mutations, folding into the fingerprint's
// active request) and keeps the requests it "created" in memory, in place
// of the cluster the writer reads them back from. Without a cluster:
//
//   - a namespace exists when it is a valid namespace name; one that cannot
//     exist (empty, or not a DNS-1123 label such as Team_Payments.Prod)
//     sends the request to writer.fallback_namespace, as the writer does
//     for a missing one;
//   - environments come from the name patterns alone (no namespace labels
//     or override ConfigMap to read);
//   - no remediation controller ends a request, so a fingerprint's request
//     stays active and every later incident of it is folded into it.
//
// A Preview is not safe for concurrent use: the printer feeds it one event
// at a time, in order.
type Preview struct {
	cfg config.Writer
	cls *Classifier
	// requests are the requests created so far, by name.
	requests map[string]*v1alpha1.RemediationRequest
	// hosts maps an incident or storm id to the name of the request that
	// counts it; active maps a fingerprint to its active request's name.
	hosts, active map[string]string
}

// NewPreview returns a Preview for cfg.
func NewPreview(cfg config.Writer) (*Preview, error) {
	cls, err := NewClassifier(cfg, noCluster{})
	if err != nil {
		return nil, err
	}
	return &Preview{cfg: cfg, cls: cls, requests: map[string]*v1alpha1.RemediationRequest{},
		hosts: map[string]string{}, active: map[string]string{}}, nil
}

// Write is what the writer would do for one event.
type Write struct {
	// Request is the request after the write, nil when the writer would
	// write nothing (a stale or repeated event, a full folded list).
	Request *v1alpha1.RemediationRequest
	// Created: the write creates Request (its status included, as the
	// writer's create carries it); otherwise it is a status write.
	Created bool
	// Urgent: a resolve or a storm close, which the writer writes after
	// writer.coalesce_interval without the busy spacing.
	Urgent bool
}

// Event is the writer's handling of an individual incident's event: the
// request it creates, or the status write it makes to the request that
// counts the incident (its own, or the fingerprint's active request it is
// folded into), or nothing.
func (p *Preview) Event(ctx context.Context, e *incident.Event) (Write, error) {
	urgent := e.State == incident.StateResolved
	name, ok := p.hosts[e.IncidentID]
	if !ok {
		if name, ok = p.active[e.Fingerprint]; !ok {
			var sig signal.Signal
			if err := signal.Decode(e.Signal, &sig); err != nil {
				return Write{}, fmt.Errorf("incident %s: %w", e.IncidentID, err)
			}
			pl, err := p.place(ctx, &sig, sig.Target.Namespace, sig.Namespace)
			if err != nil {
				return Write{}, err
			}
			rr := newRequest(e.IncidentID, e.Fingerprint, &sig, pl, p.cfg.MaxAnnotationBytes, e.FirstSeen)
			applyOwn(e)(&rr.Status)
			return p.created(rr, e.IncidentID, urgent), nil
		}
		p.hosts[e.IncidentID] = name
	}
	rr := p.requests[name]
	mut := applyOwn(e)
	if rr.Spec.IncidentID != e.IncidentID {
		mut = applyFolded(e, &foldResult{})
	}
	if !mut(&rr.Status) {
		return Write{}, nil
	}
	return Write{Request: rr.DeepCopy(), Urgent: urgent}, nil
}

// Storm is the writer's handling of a storm event: the storm's request
// created when it opens, then its status writes.
func (p *Preview) Storm(ctx context.Context, s *incident.Storm) (Write, error) {
	urgent := !s.ClosedAt.IsZero()
	name, ok := p.hosts[s.StormID]
	if !ok {
		var sig signal.Signal
		if err := signal.Decode(s.Signal, &sig); err != nil {
			return Write{}, fmt.Errorf("storm %s: %w", s.StormID, err)
		}
		pl, err := p.place(ctx, &sig, s.Scope["namespace"], sig.Target.Namespace, sig.Namespace)
		if err != nil {
			return Write{}, err
		}
		rr := newStormRequest(s, &sig, pl, p.cfg.MaxAnnotationBytes)
		applyStorm(s)(&rr.Status)
		return p.created(rr, s.StormID, urgent), nil
	}
	rr := p.requests[name]
	if !applyStorm(s)(&rr.Status) {
		return Write{}, nil
	}
	return Write{Request: rr.DeepCopy(), Urgent: urgent}, nil
}

// created records rr as created for id.
func (p *Preview) created(rr *v1alpha1.RemediationRequest, id string, urgent bool) Write {
	p.requests[rr.Name] = rr
	p.hosts[id] = rr.Name
	p.active[rr.Spec.Fingerprint] = rr.Name
	return Write{Request: rr.DeepCopy(), Created: true, Urgent: urgent}
}

// place is the writer's placement (Writer.place) with "exists" read as
// "is a valid namespace name".
func (p *Preview) place(ctx context.Context, sig *signal.Signal, namespaces ...string) (placement, error) {
	ns := ""
	for _, n := range namespaces {
		if n != "" {
			ns = n
			break
		}
	}
	env, err := p.cls.Environment(ctx, ns)
	if err != nil {
		return placement{}, err
	}
	pl := placement{namespace: ns, environment: env, priority: p.cls.Priority(string(sig.Severity), env)}
	if ns == "" || len(validation.IsDNS1123Label(ns)) > 0 {
		pl.namespace, pl.origin = p.cfg.FallbackNamespace, ns
	}
	return pl, nil
}

// noCluster is a reader of an empty cluster: every object is not found.
type noCluster struct{}

func (noCluster) Get(_ context.Context, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
}

func (noCluster) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }
