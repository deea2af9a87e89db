package signal

import (
	"encoding/json"
	"fmt"
	"testing"
)

// benchAlertmanagerBody is a realistic webhook of n alerts: the alerts of
// testdata/alertmanager_firing.json in turn, each made distinct.
func benchAlertmanagerBody(tb testing.TB, n int) []byte {
	tb.Helper()
	var w map[string]any
	if err := json.Unmarshal(readTestdata(tb, "alertmanager_firing.json"), &w); err != nil {
		tb.Fatal(err)
	}
	src := w["alerts"].([]any)
	alerts := make([]any, n)
	for i := range n {
		var a map[string]any
		raw, _ := json.Marshal(src[i%len(src)])
		_ = json.Unmarshal(raw, &a)
		labels := a["labels"].(map[string]any)
		for _, k := range []string{"pod", "exported_pod", "deployment", "node", "job_name", "statefulset"} {
			if v, ok := labels[k].(string); ok {
				labels[k] = fmt.Sprintf("%s-%d", v, i)
			}
		}
		a["fingerprint"] = fmt.Sprintf("%016x", 0x5a1f0c93d2b8e417+i)
		alerts[i] = a
	}
	w["alerts"] = alerts
	w["truncatedAlerts"] = 0
	body, err := json.Marshal(w)
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

// BenchmarkDecodeAlertmanager is the receiver's main cost (DESIGN §10).
func BenchmarkDecodeAlertmanager(b *testing.B) {
	for _, n := range []int{1, 100} {
		body := benchAlertmanagerBody(b, n)
		b.Run(fmt.Sprintf("alerts=%d", n), func(b *testing.B) {
			d := newTestDecoder(b)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				batch, err := d.DecodeAlertmanager(body)
				if err != nil || len(batch.Signals) != n {
					b.Fatalf("decoded %v, %v", batch, err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
		})
	}
}

// BenchmarkDecodeKubernetesEvents decodes the EventList of testdata.
func BenchmarkDecodeKubernetesEvents(b *testing.B) {
	body := readTestdata(b, "k8s_eventlist.json")
	d := newTestDecoder(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		batch, err := d.DecodeKubernetesEvents(body)
		if err != nil || len(batch.Signals) != 3 {
			b.Fatalf("decoded %v, %v", batch, err)
		}
	}
	b.ReportMetric(6*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func benchSignal(b *testing.B) *Signal {
	b.Helper()
	batch, err := newTestDecoder(b).DecodeAlertmanager(readTestdata(b, "alertmanager_firing.json"))
	if err != nil {
		b.Fatal(err)
	}
	return &batch.Signals[0]
}

// BenchmarkEncodeSignal is the receiver's per-signal publish encoding.
func BenchmarkEncodeSignal(b *testing.B) {
	s := benchSignal(b)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		out, err := Encode(s)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.SetBytes(int64(n))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
}

// BenchmarkDecodeSignal is a stage's decoding of a whole signal (the
// aggregator's for a new incident, the writer's for a create).
func BenchmarkDecodeSignal(b *testing.B) {
	benchDecode(b, func(enc []byte) error {
		var s Signal
		return Decode(enc, &s)
	})
}

// BenchmarkDecodeHead is the deduper's per-signal decoding, and the
// aggregator's per member repeat: the head alone.
func BenchmarkDecodeHead(b *testing.B) {
	benchDecode(b, func(enc []byte) error {
		var h Head
		return DecodeHead(enc, &h)
	})
}

// benchDecode measures decode on the encoded bench signal.
func benchDecode(b *testing.B, decode func(enc []byte) error) {
	enc, err := Encode(benchSignal(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := decode(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signals/s")
}
