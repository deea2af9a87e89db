// Package v1alpha1 holds the stormweir.io/v1alpha1 API: the
// RemediationRequest custom resource the writer creates, one per real
// incident, for a remediation controller to act on (DESIGN §5).
//
// +kubebuilder:object:generate=true
// +kubebuilder:ac:generate=true
// +groupName=stormweir.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of this package.
	GroupVersion = schema.GroupVersion{Group: "stormweir.io", Version: "v1alpha1"}

	// SchemeGroupVersion is GroupVersion under the name Kubernetes'
	// generated code looks for (the apply configurations' ForKind).
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func init() {
	SchemeBuilder.Register(&RemediationRequest{}, &RemediationRequestList{})
}
