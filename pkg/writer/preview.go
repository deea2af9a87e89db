package writer

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Preview builds RemediationRequests exactly as the writer would create
// them, without a cluster: there are no namespace labels or override
// ConfigMap to read, so environments come from the name patterns alone and
// every request stays in its signal's namespace. It is the all-in-one
// mode's output when no cluster is reachable.
type Preview struct {
	cfg config.Writer
	cls *Classifier
}

// NewPreview returns a Preview for cfg.
func NewPreview(cfg config.Writer) (*Preview, error) {
	cls, err := NewClassifier(cfg, noCluster{})
	if err != nil {
		return nil, err
	}
	return &Preview{cfg: cfg, cls: cls}, nil
}

// Request is the request an individual incident opens.
func (p *Preview) Request(ctx context.Context, e *incident.Event) (*v1alpha1.RemediationRequest, error) {
	var sig signal.Signal
	if err := signal.Decode(e.Signal, &sig); err != nil {
		return nil, err
	}
	pl, err := p.place(ctx, sig.Namespace, string(sig.Severity))
	if err != nil {
		return nil, err
	}
	return newRequest(e.IncidentID, e.Fingerprint, &sig, pl, p.cfg.MaxAnnotationBytes, e.FirstSeen), nil
}

// StormRequest is the request a storm opens.
func (p *Preview) StormRequest(ctx context.Context, s *incident.Storm) (*v1alpha1.RemediationRequest, error) {
	var sig signal.Signal
	if err := signal.Decode(s.Signal, &sig); err != nil {
		return nil, err
	}
	pl, err := p.place(ctx, sig.Namespace, string(sig.Severity))
	if err != nil {
		return nil, err
	}
	return newStormRequest(s, &sig, pl, p.cfg.MaxAnnotationBytes), nil
}

func (p *Preview) place(ctx context.Context, ns, severity string) (placement, error) {
	if ns == "" {
		ns = p.cfg.FallbackNamespace
	}
	env, err := p.cls.Environment(ctx, ns)
	if err != nil {
		return placement{}, err
	}
	return placement{namespace: ns, environment: env, priority: p.cls.Priority(severity, env)}, nil
}

// noCluster is a reader of an empty cluster: every object is not found.
type noCluster struct{}

func (noCluster) Get(_ context.Context, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
}

func (noCluster) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }
