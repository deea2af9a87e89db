package writer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/signal"
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
