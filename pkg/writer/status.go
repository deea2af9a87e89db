package writer

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	acv1alpha1 "github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1/applyconfiguration/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/incident"
)

// mutation changes stormweir's part of a request's status and reports
// whether anything changed. Every mutation is guarded by a revision, so
// applying it twice, or after a newer one, changes nothing: that is what
// lets the coalescer re-run pending mutations on a freshly read status
// after a write conflict.
type mutation func(st *v1alpha1.RemediationRequestStatus) bool

// owned returns the part of st that stormweir owns under server-side
// apply: everything but phase, which belongs to the remediation
// controller.
func owned(st *v1alpha1.RemediationRequestStatus) v1alpha1.RemediationRequestStatus {
	out := *st.DeepCopy()
	out.Phase = ""
	return out
}

func foldedSum(st *v1alpha1.RemediationRequestStatus) (count int64, last metav1.Time) {
	for _, f := range st.FoldedIncidents {
		count += f.Count
		if last.Before(&f.LastSeen) {
			last = f.LastSeen
		}
	}
	return count, last
}

func laterOf(a, b metav1.Time) metav1.Time {
	if a.Before(&b) {
		return b
	}
	return a
}

func signalStatus(e *incident.Event) *v1alpha1.SignalStatus {
	if e.State == incident.StateResolved {
		t := metaTime(firstNonZero(e.ResolvedAt, e.LastSeen))
		return &v1alpha1.SignalStatus{State: v1alpha1.SignalResolved, ResolvedAt: &t}
	}
	return &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring}
}

// applyOwn applies an event of the incident the request was created for.
// occurrences.count stays the incident's count plus its folded incidents'.
func applyOwn(e *incident.Event) mutation {
	return func(st *v1alpha1.RemediationRequestStatus) bool {
		if e.Revision <= st.ObservedRevision {
			return false
		}
		fc, flast := foldedSum(st)
		st.ObservedRevision = e.Revision
		st.Occurrences = &v1alpha1.Occurrences{
			Count:     e.Count + fc,
			FirstSeen: metaTime(firstNonZero(e.FirstSeen, e.LastSeen)),
			LastSeen:  laterOf(metaTime(firstNonZero(e.LastSeen, e.FirstSeen)), flast),
			Flaps:     e.Flaps,
		}
		st.Signal = signalStatus(e)
		return true
	}
}

// foldResult tells the caller of applyFolded what its last run did.
type foldResult struct {
	// appended: the incident was added to foldedIncidents (a new fold).
	appended bool
	// full: the list was at its bound, so the incident was not recorded.
	full bool
}

// applyFolded applies an event of an incident folded into the request:
// its entry in foldedIncidents is added or brought to the event's values.
// res reports what the last run did (a flush may re-run it).
func applyFolded(e *incident.Event, res *foldResult) mutation {
	return func(st *v1alpha1.RemediationRequestStatus) bool {
		*res = foldResult{}
		i := slices.IndexFunc(st.FoldedIncidents, func(f v1alpha1.FoldedIncident) bool { return f.IncidentID == e.IncidentID })
		if i >= 0 && e.Revision <= st.FoldedIncidents[i].ObservedRevision {
			return false
		}
		if i < 0 {
			if len(st.FoldedIncidents) >= v1alpha1.MaxFolded {
				res.full = true
				return false
			}
			res.appended = true
			st.FoldedIncidents = append(st.FoldedIncidents, v1alpha1.FoldedIncident{IncidentID: e.IncidentID})
			i = len(st.FoldedIncidents) - 1
		}
		f := &st.FoldedIncidents[i]
		delta := e.Count - f.Count
		f.Count, f.ObservedRevision = e.Count, e.Revision
		f.LastSeen = metaTime(firstNonZero(e.LastSeen, e.FirstSeen))
		if st.Occurrences == nil {
			st.Occurrences = &v1alpha1.Occurrences{FirstSeen: metaTime(e.FirstSeen)}
		}
		st.Occurrences.Count += delta
		st.Occurrences.LastSeen = laterOf(st.Occurrences.LastSeen, f.LastSeen)
		st.Signal = signalStatus(e)
		return true
	}
}

// applyStorm applies a storm event to the storm's request.
func applyStorm(s *incident.Storm) mutation {
	return func(st *v1alpha1.RemediationRequestStatus) bool {
		if s.Revision <= st.ObservedRevision {
			return false
		}
		st.ObservedRevision = s.Revision
		affected := make([]v1alpha1.Target, 0, min(len(s.Affected), v1alpha1.MaxAffected))
		for _, t := range s.Affected[:min(len(s.Affected), v1alpha1.MaxAffected)] {
			affected = append(affected, toTarget(t))
		}
		ss := &v1alpha1.StormStatus{
			Members:       s.Members,
			Occurrences:   s.Occurrences,
			Affected:      affected,
			AffectedTotal: max(s.AffectedTotal, int64(len(s.Affected))),
		}
		if !s.ClosedAt.IsZero() {
			t := metaTime(s.ClosedAt)
			ss.ClosedAt = &t
		}
		st.Storm = ss
		st.Occurrences = &v1alpha1.Occurrences{
			Count:     s.Occurrences,
			FirstSeen: metaTime(s.DetectedAt),
			LastSeen:  metaTime(firstNonZero(s.LastSeen, s.DetectedAt)),
		}
		st.Signal = &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring}
		return true
	}
}

// statusApply is the apply configuration of stormweir's status fields of
// the request key: the owned fields of st, each set exactly when its JSON
// form (the API types' tags) carries it, so the apply names the same
// fields a JSON encoding of st would. Building it is a copy; the client
// encodes it once (TestStatusApply_namesWhatTheStatusJSONNames).
func statusApply(key types.NamespacedName, st *v1alpha1.RemediationRequestStatus) *acv1alpha1.RemediationRequestApplyConfiguration {
	s := acv1alpha1.RemediationRequestStatus()
	if st.ObservedRevision != 0 {
		s.WithObservedRevision(st.ObservedRevision)
	}
	if o := st.Occurrences; o != nil {
		oc := acv1alpha1.Occurrences().WithCount(o.Count).WithFirstSeen(o.FirstSeen).WithLastSeen(o.LastSeen)
		if o.Flaps != 0 {
			oc.WithFlaps(o.Flaps)
		}
		s.WithOccurrences(oc)
	}
	if sg := st.Signal; sg != nil {
		sc := acv1alpha1.SignalStatus().WithState(sg.State)
		if sg.ResolvedAt != nil {
			sc.WithResolvedAt(*sg.ResolvedAt)
		}
		s.WithSignal(sc)
	}
	if sm := st.Storm; sm != nil {
		sc := acv1alpha1.StormStatus().WithMembers(sm.Members).WithOccurrences(sm.Occurrences).WithAffectedTotal(sm.AffectedTotal)
		for _, t := range sm.Affected {
			sc.WithAffected(targetApply(t))
		}
		if sm.ClosedAt != nil {
			sc.WithClosedAt(*sm.ClosedAt)
		}
		s.WithStorm(sc)
	}
	for _, f := range st.FoldedIncidents {
		s.WithFoldedIncidents(acv1alpha1.FoldedIncident().WithIncidentID(f.IncidentID).WithCount(f.Count).
			WithLastSeen(f.LastSeen).WithObservedRevision(f.ObservedRevision))
	}
	return acv1alpha1.RemediationRequest(key.Name, key.Namespace).WithStatus(s)
}

// targetApply is t as its JSON form names it: empty fields left out.
func targetApply(t v1alpha1.Target) *acv1alpha1.TargetApplyConfiguration {
	tc := acv1alpha1.Target()
	if t.Kind != "" {
		tc.WithKind(t.Kind)
	}
	if t.Name != "" {
		tc.WithName(t.Name)
	}
	if t.Namespace != "" {
		tc.WithNamespace(t.Namespace)
	}
	return tc
}
