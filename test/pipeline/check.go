package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/loadgen"
)

// Result compares the RemediationRequests in the API server with what a
// load should have produced.
//
// Every pod of the load is one incident. A pod outside the storm namespace
// must have exactly one request whose occurrence count equals the number
// of times it was sent. In the storm namespace the first incidents below
// the rate threshold stay individual (precursors: one request each, exact
// counts); every later one is a member of the one storm request, whose
// members and occurrences are the members' number and the sum of their
// counts.
type Result struct {
	// Requests is the number of RemediationRequests; Want the number a
	// lossless, exact pipeline makes.
	Requests, Want int
	// Lost lists incidents without a request ("namespace/pod").
	Lost []string
	// Duplicated lists incidents with more than one request.
	Duplicated []string
	// WrongCount lists individual requests whose occurrence count is off,
	// as "namespace/pod: got N, want M".
	WrongCount []string
	// Unexpected lists requests that match no incident of the load.
	Unexpected []string
	// StormRequests counts requests with spec.storm; Precursors the
	// individual requests in the storm namespace. The Want fields are
	// what the load implies: one storm when it has more storm incidents
	// than precursors.
	StormRequests, WantStormRequests int
	Precursors, WantPrecursors       int
	// StormMembers and StormOccurrences are the storm request's status;
	// the Want fields what the load implies given the precursors.
	StormMembers, WantStormMembers         int64
	StormOccurrences, WantStormOccurrences int64
	// StormAffected is status.storm.affectedTotal; every storm pod,
	// precursors included, is affected.
	StormAffected, WantStormAffected int64
}

// OK reports whether the pipeline made exactly the requests the load
// implies.
func (r Result) OK() bool {
	return r.Requests == r.Want && len(r.Lost)+len(r.Duplicated)+len(r.WrongCount)+len(r.Unexpected) == 0 &&
		r.StormRequests == r.WantStormRequests && r.Precursors == r.WantPrecursors &&
		r.StormMembers == r.WantStormMembers && r.StormOccurrences == r.WantStormOccurrences &&
		r.StormAffected == r.WantStormAffected
}

// String summarises r, listing at most a few names of each problem.
func (r Result) String() string {
	head := func(l []string) string {
		if len(l) > 5 {
			return strings.Join(l[:5], ", ") + fmt.Sprintf(" … (%d)", len(l))
		}
		return strings.Join(l, ", ")
	}
	return fmt.Sprintf("requests %d (want %d); lost %d [%s]; duplicated %d [%s]; wrong count %d [%s]; unexpected %d [%s]; "+
		"storm requests %d (want %d), precursors %d (want %d), members %d (want %d), storm occurrences %d (want %d), affected %d (want %d)",
		r.Requests, r.Want, len(r.Lost), head(r.Lost), len(r.Duplicated), head(r.Duplicated), len(r.WrongCount), head(r.WrongCount),
		len(r.Unexpected), head(r.Unexpected), r.StormRequests, r.WantStormRequests, r.Precursors, r.WantPrecursors, r.StormMembers, r.WantStormMembers,
		r.StormOccurrences, r.WantStormOccurrences, r.StormAffected, r.WantStormAffected)
}

// Check lists the requests and compares them with exp; precursors is the
// number of storm incidents that stay individual (the aggregator's rate
// threshold).
func (p *Pipeline) Check(ctx context.Context, exp loadgen.Expected, precursors int) (Result, error) {
	items, err := p.API.Requests(ctx)
	if err != nil {
		return Result{}, err
	}
	return Compare(items, exp, precursors), nil
}

// Compare checks requests against exp (see Result).
func Compare(items []v1alpha1.RemediationRequest, exp loadgen.Expected, precursors int) Result {
	r := Result{Requests: len(items), Want: exp.Incidents - exp.StormIncidents}
	r.WantPrecursors = min(precursors, exp.StormIncidents)
	if exp.StormIncidents > precursors {
		r.WantStormRequests = 1
	}
	r.Want += r.WantPrecursors + r.WantStormRequests
	own := map[string]int{}
	var storm *v1alpha1.RemediationRequest
	for i := range items {
		rr := &items[i]
		if rr.Spec.Storm != nil {
			r.StormRequests++
			storm = rr
			continue
		}
		pod := rr.Spec.Target.Namespace + "/" + rr.Spec.Target.Name
		want, ok := exp.Occurrences[pod]
		if !ok {
			r.Unexpected = append(r.Unexpected, rr.Namespace+"/"+rr.Name)
			continue
		}
		own[pod]++
		if rr.Spec.Target.Namespace == loadgen.StormNamespace {
			r.Precursors++
		}
		var got int64
		if rr.Status.Occurrences != nil {
			got = rr.Status.Occurrences.Count
		}
		if got != int64(want) {
			r.WrongCount = append(r.WrongCount, fmt.Sprintf("%s: got %d, want %d", pod, got, want))
		}
	}
	for pod, n := range exp.Occurrences {
		isStorm := strings.HasPrefix(pod, loadgen.StormNamespace+"/")
		switch {
		case own[pod] > 1:
			r.Duplicated = append(r.Duplicated, pod)
		case own[pod] == 0 && !isStorm:
			r.Lost = append(r.Lost, pod)
		case own[pod] == 0 && isStorm:
			r.WantStormMembers++
			r.WantStormOccurrences += int64(n)
		}
		if isStorm {
			r.WantStormAffected++
		}
	}
	if storm != nil && storm.Status.Storm != nil {
		r.StormMembers = storm.Status.Storm.Members
		r.StormOccurrences = storm.Status.Storm.Occurrences
		r.StormAffected = storm.Status.Storm.AffectedTotal
	}
	if r.StormRequests == 0 && r.WantStormMembers > 0 {
		// No storm request: the members are lost.
		for pod := range exp.Occurrences {
			if strings.HasPrefix(pod, loadgen.StormNamespace+"/") && own[pod] == 0 {
				r.Lost = append(r.Lost, pod)
			}
		}
	}
	slices.Sort(r.Lost)
	slices.Sort(r.Duplicated)
	slices.Sort(r.WrongCount)
	slices.Sort(r.Unexpected)
	return r
}

// WaitCheck waits for the consumers to be idle, then polls the requests
// until they match exp or timeout passes (a status write may still be on
// its way after the last ack), and returns the last comparison.
func (p *Pipeline) WaitCheck(ctx context.Context, exp loadgen.Expected, precursors int, timeout time.Duration) (Result, error) {
	deadline := time.Now().Add(timeout)
	if _, err := p.WaitIdle(ctx, timeout); err != nil {
		return Result{}, err
	}
	for {
		r, err := p.Check(ctx, exp, precursors)
		if err == nil && r.OK() {
			return r, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%w within %s: %s", ErrMismatch, timeout, r)
			}
			return r, err
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ErrMismatch is returned by WaitCheck when the requests never matched
// the load; the Result says how.
var ErrMismatch = errors.New("remediation requests do not match the load")
