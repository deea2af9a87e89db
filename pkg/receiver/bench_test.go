package receiver_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/pkg/signal"
)

// BenchmarkReceiver posts Alertmanager webhooks of 1 and 100 alerts over
// loopback HTTP to a receiver on in-process JetStream (file storage), and
// measures, in the same run and on the same server, the raw JetStream
// async-publish-with-msg-id rate for messages of the same size: the
// ceiling the receiver is compared against.
//
//	go test -run '^$' -bench BenchmarkReceiver -benchtime 5s ./pkg/receiver/
func BenchmarkReceiver(b *testing.B) {
	for _, alerts := range []int{1, 100} {
		b.Run("alerts="+strconv.Itoa(alerts), func(b *testing.B) { benchReceiver(b, alerts) })
	}
}

func benchReceiver(b *testing.B, alerts int) {
	h := newHarness(b)
	tmpl, msgSize := benchTemplate(b, alerts)
	ceiling := jetStreamCeiling(b, h, msgSize)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	var seq atomic.Int64
	b.SetBytes(int64(len(tmpl)))
	b.ResetTimer()
	start := time.Now()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// Unique startsAt fractions make every alert of every request
			// a new signal, so nothing is absorbed as a duplicate.
			n := seq.Add(1)
			body := bytes.ReplaceAll(tmpl, []byte("000000000Z"), fmt.Appendf(nil, "%09dZ", n))
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+receiver.PathAlertmanager, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(b.N*alerts) / elapsed.Seconds()
	b.ReportMetric(rate, "signals/s")
	b.ReportMetric(ceiling, "js-ceiling-msgs/s")
	b.ReportMetric(rate/ceiling, "ratio")
}

// benchTemplate returns a webhook body whose startsAt values end in
// "000000000Z", and the size of one encoded signal from it.
func benchTemplate(b *testing.B, alerts int) ([]byte, int) {
	start := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	as := make([]loadgen.Alert, alerts)
	for i := range as {
		as[i] = loadgen.PodAlert("KubePodCrashLooping", "payments", fmt.Sprintf("api-%04d", i), start)
	}
	body := loadgen.NewWebhook(as...).JSON()
	body = bytes.ReplaceAll(body, []byte(`T09:00:00Z"`), []byte(`T09:00:00.000000000Z"`))
	d := signal.NewDecoder(signal.MustFingerprinter(signal.DefaultFingerprintFields), nil)
	batch, err := d.DecodeAlertmanager(body)
	require.NoError(b, err)
	require.Len(b, batch.Signals, alerts)
	enc, err := signal.Encode(&batch.Signals[0])
	require.NoError(b, err)
	return body, len(enc)
}

// jetStreamCeiling publishes size-byte messages with msg-ids
// asynchronously to the signals stream and returns the acknowledged rate.
func jetStreamCeiling(b *testing.B, h *harness, size int) float64 {
	const n = 50000
	nc, err := nats.Connect(h.cfg.Bus.URL)
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	require.NoError(b, err)
	subj := bus.NewSubjects(h.cfg.Bus.Prefix).Signals("ceiling")
	payload := bytes.Repeat([]byte("x"), size)
	start := time.Now()
	for i := range n {
		if _, err := js.PublishAsync(subj, payload, jetstream.WithMsgID("ceiling-"+strconv.Itoa(i)), jetstream.WithStallWait(10*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("ceiling publish did not complete")
	}
	rate := float64(n) / time.Since(start).Seconds()
	// Leave the stream as the receiver would find it.
	st, err := h.conn.JS.Stream(context.Background(), bus.NewSubjects(h.cfg.Bus.Prefix).StreamName(bus.StreamSignals))
	require.NoError(b, err)
	require.NoError(b, st.Purge(context.Background()))
	return rate
}
