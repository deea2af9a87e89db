package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Label and annotation keys the writer sets on every RemediationRequest.
// Label values are at most 63 characters, so the 64-hex fingerprint is
// carried as a truncated hash label (for kubectl selectors) and in full in
// spec.fingerprint.
const (
	LabelFingerprint     = "stormweir.io/fingerprint"
	LabelSignal          = "stormweir.io/signal"
	LabelSeverity        = "stormweir.io/severity"
	LabelEnvironment     = "stormweir.io/environment"
	LabelPriority        = "stormweir.io/priority"
	LabelStorm           = "stormweir.io/storm"
	LabelOriginNamespace = "stormweir.io/origin-namespace"
	// LabelEnded ("true") marks a request in a terminal phase whose
	// incidents the writer has ended. The writer watches only requests
	// without it, so its memory does not grow with finished requests.
	LabelEnded = "stormweir.io/ended"
	// AnnotationOriginNamespace keeps the origin namespace in full when it
	// does not fit a label value.
	AnnotationOriginNamespace = "stormweir.io/origin-namespace"
	// AnnotationEnvironmentRule says which rule classified the request's
	// environment (a namespace label, the override ConfigMap, a name
	// pattern, or none), so `kubectl get rr -o yaml` shows why.
	AnnotationEnvironmentRule = "stormweir.io/environment-rule"
	// AnnotationPriorityRule says which writer.priority rule (by index,
	// with its severity and environment) gave the priority, or that none
	// matched and the default applied.
	AnnotationPriorityRule = "stormweir.io/priority-rule"
)

// Bounds of the lists the writer keeps in status.
const (
	// MaxAffected caps status.storm.affected; affectedTotal has the truth.
	MaxAffected = 100
	// MaxFolded caps status.foldedIncidents.
	MaxFolded = 100
)

// Severity is a signal's normalized severity.
// +kubebuilder:validation:Enum=critical;warning;info
type Severity string

// Source is where a signal came from.
// +kubebuilder:validation:Enum=alertmanager;kubernetes-event;grafana
type Source string

// SignalState is whether the incident's signal still fires.
// +kubebuilder:validation:Enum=firing;resolved
type SignalState string

// Signal states.
const (
	SignalFiring   SignalState = "firing"
	SignalResolved SignalState = "resolved"
)

// SignalRef names the signal that opened the incident.
type SignalRef struct {
	// Name is the alertname or the Kubernetes event reason.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name     string   `json:"name"`
	Source   Source   `json:"source"`
	Severity Severity `json:"severity"`
}

// Target is the Kubernetes resource the incident is about. Kind and name
// are empty when the signal named none; namespace is empty for
// cluster-scoped resources.
type Target struct {
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Kind string `json:"kind,omitempty"`
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Name string `json:"name,omitempty"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// StormType says how a storm was detected.
// +kubebuilder:validation:Enum=rate;pattern
type StormType string

// StormSpec describes a storm incident: many incidents of one scope folded
// into this one request.
type StormSpec struct {
	// Scope is the grouping the storm covers (by default alertname and
	// namespace).
	// +kubebuilder:validation:MaxProperties=16
	Scope      map[string]string `json:"scope,omitempty"`
	Type       StormType         `json:"type"`
	DetectedAt metav1.Time       `json:"detectedAt"`
}

// RequestRef points at another RemediationRequest.
type RequestRef struct {
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MaxLength=128
	// +optional
	IncidentID string `json:"incidentID,omitempty"`
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Phase string `json:"phase,omitempty"`
}

// RemediationRequestSpec is the incident as classified when it opened. The
// writer sets it once, at creation; the API server refuses any change to
// it afterwards.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
type RemediationRequestSpec struct {
	// Fingerprint identifies the incident's source (DESIGN §2); for a storm,
	// its scope.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Fingerprint string `json:"fingerprint"`
	// IncidentID is the incident this request was created for; incidents
	// folded in later are listed in status.foldedIncidents.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	IncidentID string    `json:"incidentID"`
	Signal     SignalRef `json:"signal"`
	// +optional
	Target Target `json:"target,omitzero"`
	// Environment is the target namespace's environment, or "unknown".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Environment string `json:"environment"`
	// Priority is P0 (most urgent) to P3, from severity and environment.
	// +kubebuilder:validation:Pattern=`^P[0-3]$`
	Priority string `json:"priority"`
	// Labels are the signal's labels.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are the signal's annotations, cut to the configured
	// size (writer.max_annotation_bytes) by the writer.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// FiringTime is when the signal started firing at its source.
	FiringTime metav1.Time `json:"firingTime"`
	// ReceivedTime is when stormweir received the first signal.
	ReceivedTime metav1.Time `json:"receivedTime"`
	// Storm is set when this request stands for a storm.
	// +optional
	Storm *StormSpec `json:"storm,omitempty"`
	// PreviousRequestRef is the latest finished request of the same
	// fingerprint, when there was one.
	// +optional
	PreviousRequestRef *RequestRef `json:"previousRequestRef,omitempty"`
}

// Occurrences counts the incident's firings. All values are absolute.
type Occurrences struct {
	// +kubebuilder:validation:Minimum=0
	Count     int64       `json:"count"`
	FirstSeen metav1.Time `json:"firstSeen"`
	LastSeen  metav1.Time `json:"lastSeen"`
	// Flaps counts resolve-then-fire cycles within the reopen window.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Flaps int64 `json:"flaps,omitempty"`
}

// SignalStatus is the signal's current state.
type SignalStatus struct {
	State SignalState `json:"state"`
	// +optional
	ResolvedAt *metav1.Time `json:"resolvedAt,omitempty"`
}

// StormStatus counts a storm's members.
type StormStatus struct {
	// Members is the number of incidents folded into the storm.
	Members int64 `json:"members"`
	// Occurrences is the total occurrence count over all members.
	Occurrences int64 `json:"occurrences"`
	// Affected lists up to 100 affected resources.
	// +kubebuilder:validation:MaxItems=100
	// +listType=atomic
	// +optional
	Affected []Target `json:"affected,omitempty"`
	// AffectedTotal is the true number of distinct affected resources.
	AffectedTotal int64 `json:"affectedTotal"`
	// +optional
	ClosedAt *metav1.Time `json:"closedAt,omitempty"`
}

// FoldedIncident is a later incident of the same fingerprint that arrived
// while this request was still active, so it was folded in rather than
// given a second active request.
type FoldedIncident struct {
	// +kubebuilder:validation:MaxLength=128
	IncidentID string      `json:"incidentID"`
	Count      int64       `json:"count"`
	LastSeen   metav1.Time `json:"lastSeen"`
	// ObservedRevision is the incident revision last applied.
	ObservedRevision int64 `json:"observedRevision"`
}

// RemediationRequestStatus is written by two owners under server-side
// apply: stormweir owns everything but phase; the remediation controller
// owns phase. The API server refuses to move observedRevision backwards,
// so a writer replica with a stale view can never undo a newer update,
// without any write having to carry a resourceVersion (which would make
// stormweir and the controller conflict with each other).
//
// Status is not a subresource: a new request is created with its status
// in one write (a create through a status subresource drops status, which
// would cost every new incident a second write). Both owners apply their
// status fields to the request itself; the spec's immutability rule keeps
// those writes from touching anything else.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.observedRevision) || (has(self.observedRevision) && self.observedRevision >= oldSelf.observedRevision)",message="observedRevision must not decrease"
type RemediationRequestStatus struct {
	// Phase is set by the remediation controller. Terminal phases
	// (by default Completed, Failed, Cancelled, TimedOut) end the incident.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Phase string `json:"phase,omitempty"`
	// ObservedRevision is the incident (or storm) revision last applied;
	// older or repeated events change nothing.
	// +optional
	ObservedRevision int64 `json:"observedRevision,omitempty"`
	// Occurrences counts firings, folded incidents included.
	// +optional
	Occurrences *Occurrences `json:"occurrences,omitempty"`
	// +optional
	Signal *SignalStatus `json:"signal,omitempty"`
	// +optional
	Storm *StormStatus `json:"storm,omitempty"`
	// FoldedIncidents are later incidents of the fingerprint counted here.
	// +kubebuilder:validation:MaxItems=100
	// +listType=map
	// +listMapKey=incidentID
	// +optional
	FoldedIncidents []FoldedIncident `json:"foldedIncidents,omitempty"`
}

// RemediationRequest asks for one incident to be remediated.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=rr,categories=stormweir
// +kubebuilder:printcolumn:name="Signal",type=string,JSONPath=`.spec.signal.name`
// +kubebuilder:printcolumn:name="Severity",type=string,JSONPath=`.spec.signal.severity`
// +kubebuilder:printcolumn:name="Environment",type=string,JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Priority",type=string,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Occurrences",type=integer,JSONPath=`.status.occurrences.count`
// +kubebuilder:printcolumn:name="Storm",type=string,JSONPath=`.spec.storm.type`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RemediationRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RemediationRequestSpec   `json:"spec"`
	Status RemediationRequestStatus `json:"status,omitempty"`
}

// RemediationRequestList is a list of RemediationRequests.
//
// +kubebuilder:object:root=true
type RemediationRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RemediationRequest `json:"items"`
}
