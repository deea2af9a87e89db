package config

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Watcher configures the Kubernetes event watcher: Warning events read
// from the API server with an informer and published as signals, as if an
// event exporter had posted them to the receiver (DESIGN §2).
type Watcher struct {
	// Enabled runs the watcher in the receiver process. `stormweir run`
	// decides with allinone.watcher instead.
	Enabled bool `mapstructure:"enabled" yaml:"enabled"`
	// Kubeconfig is a kubeconfig path; empty means in-cluster or the
	// usual places (KUBECONFIG, ~/.kube/config).
	Kubeconfig string `mapstructure:"kubeconfig" yaml:"kubeconfig"`
	// Namespaces are watched each with a watch of its own; empty watches
	// every namespace (which needs a ClusterRole).
	Namespaces []string `mapstructure:"namespaces" yaml:"namespaces"`
	// Reasons, when set, are the only event reasons published (e.g.
	// BackOff, FailedScheduling); empty publishes every Warning event.
	Reasons []string `mapstructure:"reasons" yaml:"reasons"`
	// QPS and Burst bound the watcher's requests to the API server (one
	// list and one watch per namespace, again after a watch expires).
	QPS   float32 `mapstructure:"qps" yaml:"qps"`
	Burst int     `mapstructure:"burst" yaml:"burst"`
}

// DefaultWatcher is the watcher's default: off, every namespace, every
// reason.
func DefaultWatcher() Watcher { return Watcher{QPS: 5, Burst: 10} }

// Validate checks the watcher section.
func (w Watcher) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, ns := range w.Namespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("watcher.namespaces: %q is not a namespace name: %s", ns, msgs[0]))
		} else if seen[ns] {
			errs = append(errs, fmt.Errorf("watcher.namespaces: %q is listed twice", ns))
		}
		seen[ns] = true
	}
	reasons := map[string]bool{}
	for _, r := range w.Reasons {
		if r == "" || reasons[r] {
			errs = append(errs, fmt.Errorf("watcher.reasons: %q is empty or listed twice", r))
		}
		reasons[r] = true
	}
	if w.QPS <= 0 || w.Burst <= 0 {
		errs = append(errs, errors.New("watcher.qps and watcher.burst: must be positive"))
	}
	return errors.Join(errs...)
}
