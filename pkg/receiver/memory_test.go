package receiver_test

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/receiver"
)

// tinyAlertsBody is an Alertmanager webhook of n alerts with nothing but
// an alertname and a pod: the most signals a body of a given size can
// carry, so the most heap per body byte. 85,000 of them fit in 4 MiB.
func tinyAlertsBody(n int, run int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"version":"4","status":"firing","alerts":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"labels":{"alertname":"A","pod":"%x"}}`, run*n+i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// heapPeak samples the heap's object bytes (live and not yet collected)
// until stop is closed, and returns the highest value seen.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// BenchmarkReceiver_bigRequests posts concurrent webhooks of 85,000 tiny
// alerts (3.6 MB each) to a receiver with the default limits on
// in-process JetStream and reports the peak heap above the idle heap
// while they are answered, and how many got 202. The in-process
// nats-server's heap is included (it stores the signals as they come);
// DESIGN §13 has the receiver's alone, measured as a process.
//
//	go test -run '^$' -bench BenchmarkReceiver_bigRequests -benchtime 3x ./pkg/receiver/
func BenchmarkReceiver_bigRequests(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run("concurrent="+strconv.Itoa(conc), func(b *testing.B) {
			h := newHarness(b, func(c *config.Config) { c.Bus.PublishTimeout = time.Minute })
			bodies := make([][]byte, conc)
			var accepted, refused int
			var peakSum uint64
			for i := range b.N {
				for j := range bodies {
					bodies[j] = tinyAlertsBody(85000, i*conc+j)
					require.Less(b, len(bodies[j]), 4<<20)
				}
				runtime.GC()
				s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
				metrics.Read(s)
				base := s[0].Value.Uint64()
				stop := make(chan struct{})
				peak := heapPeak(stop)
				var wg sync.WaitGroup
				codes := make([]int, conc)
				for j := range bodies {
					wg.Go(func() {
						req, _ := http.NewRequest(http.MethodPost, h.srv.URL+receiver.PathAlertmanager, bytes.NewReader(bodies[j]))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("Authorization", "Bearer "+token)
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						_ = resp.Body.Close()
						codes[j] = resp.StatusCode
					})
				}
				wg.Wait()
				close(stop)
				peakSum += <-peak - base
				for _, c := range codes {
					if c == http.StatusAccepted {
						accepted++
					} else {
						refused++
					}
				}
			}
			b.ReportMetric(float64(peakSum)/float64(b.N)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(accepted)/float64(b.N), "202/op")
			b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
		})
	}
}
