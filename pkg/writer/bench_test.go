package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// BenchmarkWriter_createRate compares RemediationRequests created per
// second through the writer (bus → handler → create + status apply) with
// the API server's own raw create rate, measured in the same run with the
// same client limits and 16 concurrent creators.
func BenchmarkWriter_createRate(b *testing.B) {
	h := startWriter(b)
	ctx := context.Background()
	n := max(b.N, 50)

	rawNS := h.namespace("raw-"+h.id, nil)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rr := validRequest(rawNS)
				rr.GenerateName, rr.Name = "", fmt.Sprintf("raw-%d", i)
				if err := h.w.client.Create(ctx, rr); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	raw := float64(n) / time.Since(start).Seconds()

	ns := h.namespace("prod-"+h.id, nil)
	events := make([]any, n)
	for i := range n {
		id := fmt.Sprintf("i%sb%d", h.id, i)
		events[i] = event(fingerprintOf(id), id, 1, 1, ns, signal.SeverityWarning)
	}
	b.ResetTimer()
	start = time.Now()
	for i, e := range events {
		h.publish(h.subj.IncidentsOpen(), e, fmt.Sprintf("b%d", i))
	}
	require.Eventually(b, func() bool { return h.acked() >= float64(n) }, 5*time.Minute, 5*time.Millisecond)
	b.StopTimer()
	through := float64(n) / time.Since(start).Seconds()
	b.ReportMetric(through, "crs/s")
	b.ReportMetric(raw, "raw-creates/s")
	b.ReportMetric(through/raw, "ratio")
}

// benchStatuses are the statuses of a status write: an incident's (with
// folded incidents) and a storm's (with its 100 affected resources).
func benchStatuses() map[string]*v1alpha1.RemediationRequestStatus {
	at := metav1.NewTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	affected := make([]v1alpha1.Target, v1alpha1.MaxAffected)
	for i := range affected {
		affected[i] = v1alpha1.Target{Kind: "Pod", Name: fmt.Sprintf("api-%d", i), Namespace: "prod"}
	}
	return map[string]*v1alpha1.RemediationRequestStatus{
		"incident": {
			ObservedRevision: 42,
			Occurrences:      &v1alpha1.Occurrences{Count: 420, FirstSeen: at, LastSeen: at, Flaps: 1},
			Signal:           &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring},
			FoldedIncidents:  []v1alpha1.FoldedIncident{{IncidentID: "i0123456789abcdef0123", Count: 3, LastSeen: at, ObservedRevision: 3}},
		},
		"storm": {
			ObservedRevision: 900,
			Occurrences:      &v1alpha1.Occurrences{Count: 900, FirstSeen: at, LastSeen: at},
			Signal:           &v1alpha1.SignalStatus{State: v1alpha1.SignalFiring},
			Storm:            &v1alpha1.StormStatus{Members: 150, Occurrences: 900, AffectedTotal: 150, Affected: affected},
		},
	}
}

// BenchmarkStatusApply_body measures what a status write costs the writer
// before the request leaves: building the apply and encoding its body as
// the client does.
func BenchmarkStatusApply_body(b *testing.B) {
	key := types.NamespacedName{Namespace: "prod", Name: "rr-i0123456789abcdef0123"}
	for name, st := range benchStatuses() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := testenv.ReadCPU(b, nil)
			for b.Loop() {
				if _, err := json.Marshal(statusApply(key, st)); err != nil {
					b.Fatal(err)
				}
			}
			testenv.ReportCPU(b, nil, cpu)
		})
	}
}
