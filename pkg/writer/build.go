package writer

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// maxMapEntries mirrors the CRD's maxProperties on spec.labels and
// spec.annotations.
const maxMapEntries = 64

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// RequestName is the deterministic name of the RemediationRequest for an
// incident or storm id, so a repeated create of the same incident is an
// AlreadyExists rather than a second CR. Ids that are not DNS-label safe
// (or too long) are hashed.
func RequestName(incidentID string) string {
	if len(incidentID) <= 60 && dnsLabelRE.MatchString(incidentID) {
		return "rr-" + incidentID
	}
	sum := sha256.Sum256([]byte(incidentID))
	return "rr-" + hex.EncodeToString(sum[:])[:40]
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{32,}$`)

// FingerprintLabel is the value of the stormweir.io/fingerprint label: a
// 64-hex fingerprint does not fit a label value (63 characters), so the
// label carries its first 32 hex characters (128 bits), and spec.fingerprint
// the whole; other fingerprints are hashed first.
func FingerprintLabel(fp string) string {
	if !hexRE.MatchString(fp) {
		sum := sha256.Sum256([]byte(fp))
		fp = hex.EncodeToString(sum[:])
	}
	return fp[:32]
}

var labelInvalidRE = regexp.MustCompile(`[^-A-Za-z0-9_.]+`)

// labelValue turns s into a valid label value, or "" when nothing is left.
func labelValue(s string) string {
	s = labelInvalidRE.ReplaceAllString(s, "_")
	if len(s) > validation.LabelValueMaxLength {
		s = s[:validation.LabelValueMaxLength]
	}
	s = strings.TrimFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
	return s
}

func setLabel(labels map[string]string, key, value string) {
	if v := labelValue(value); v != "" {
		labels[key] = v
	}
}

// boundedLabels keeps at most maxMapEntries labels, by key order.
func boundedLabels(in map[string]string) map[string]string {
	if len(in) == 0 {
		return nil
	}
	keys := sortedKeys(in)
	out := make(map[string]string, min(len(keys), maxMapEntries))
	for _, k := range keys[:min(len(keys), maxMapEntries)] {
		out[k] = in[k]
	}
	return out
}

// boundedAnnotations keeps annotations, by key order, while their keys and
// values fit maxBytes; the value that crosses the bound is cut short.
func boundedAnnotations(in map[string]string, maxBytes int) map[string]string {
	if len(in) == 0 || maxBytes <= 0 {
		return nil
	}
	out := map[string]string{}
	left := maxBytes
	for _, k := range sortedKeys(in) {
		if len(out) == maxMapEntries || len(k) >= left {
			break
		}
		v := in[k]
		if len(k)+len(v) > left {
			v = truncateUTF8(v, left-len(k))
		}
		out[k] = v
		left -= len(k) + len(v)
	}
	return out
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func metaTime(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t.UTC())
}

func firstNonZero(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

func toTarget(t signal.Target) v1alpha1.Target {
	return v1alpha1.Target{Kind: t.Kind, Name: t.Name, Namespace: t.Namespace}
}

// placement is where a request goes and how it is classified.
type placement struct {
	namespace   string
	origin      string // the signal's namespace when the fallback was used
	environment string
	priority    string
	// envRule and prioRule say which rules classified the request.
	envRule, prioRule string
}

// newRequest builds the RemediationRequest for an incident: spec and
// labels only, since status cannot be set on create.
func newRequest(id, fp string, sig *signal.Signal, pl placement, maxAnnotationBytes int, firstSeen time.Time) *v1alpha1.RemediationRequest {
	rr := &v1alpha1.RemediationRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "RemediationRequest"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      RequestName(id),
			Namespace: pl.namespace,
			Labels:    map[string]string{},
		},
		Spec: v1alpha1.RemediationRequestSpec{
			Fingerprint: fp,
			IncidentID:  id,
			Signal: v1alpha1.SignalRef{
				Name:     sig.Name,
				Source:   v1alpha1.Source(sig.Source),
				Severity: v1alpha1.Severity(sig.Severity),
			},
			Target:       toTarget(sig.Target),
			Environment:  pl.environment,
			Priority:     pl.priority,
			Labels:       boundedLabels(sig.Labels),
			Annotations:  boundedAnnotations(sig.Annotations, maxAnnotationBytes),
			FiringTime:   metaTime(firstNonZero(sig.StartsAt, firstSeen, sig.ReceivedAt)),
			ReceivedTime: metaTime(firstNonZero(sig.ReceivedAt, firstSeen)),
		},
	}
	l := rr.Labels
	l[v1alpha1.LabelFingerprint] = FingerprintLabel(fp)
	setLabel(l, v1alpha1.LabelSignal, sig.Name)
	setLabel(l, v1alpha1.LabelSeverity, string(sig.Severity))
	setLabel(l, v1alpha1.LabelEnvironment, pl.environment)
	setLabel(l, v1alpha1.LabelPriority, pl.priority)
	rr.Annotations = map[string]string{}
	if pl.envRule != "" {
		rr.Annotations[v1alpha1.AnnotationEnvironmentRule] = pl.envRule
	}
	if pl.prioRule != "" {
		rr.Annotations[v1alpha1.AnnotationPriorityRule] = pl.prioRule
	}
	if pl.origin != "" {
		setLabel(l, v1alpha1.LabelOriginNamespace, pl.origin)
		rr.Annotations[v1alpha1.AnnotationOriginNamespace] = pl.origin
	}
	return rr
}

// newStormRequest builds the RemediationRequest for a storm incident; rep
// is its representative signal, decoded.
func newStormRequest(s *incident.Storm, rep *signal.Signal, pl placement, maxAnnotationBytes int) *v1alpha1.RemediationRequest {
	sig := *rep
	// A storm is about many resources: the representative signal's target
	// would single one out, so only the namespace is kept.
	sig.Target = signal.Target{Namespace: pl.origin}
	if pl.origin == "" {
		sig.Target.Namespace = pl.namespace
	}
	rr := newRequest(s.StormID, s.Fingerprint, &sig, pl, maxAnnotationBytes, s.DetectedAt)
	rr.Spec.Storm = &v1alpha1.StormSpec{
		Scope:      s.Scope,
		Type:       v1alpha1.StormType(s.Type),
		DetectedAt: metaTime(s.DetectedAt),
	}
	rr.Labels[v1alpha1.LabelStorm] = "true"
	return rr
}
