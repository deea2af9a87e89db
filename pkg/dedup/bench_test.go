package dedup_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// benchSignals returns n encoded signals as the receiver publishes them:
// real KubePodCrashLooping alerts (about 1.3 KB each) of n pods.
func benchSignals(b *testing.B, n int) [][]byte {
	b.Helper()
	alerts := make([]loadgen.Alert, n)
	for i := range alerts {
		alerts[i] = loadgen.PodAlert("KubePodCrashLooping", "shop", fmt.Sprintf("web-%d", i), time.Now())
	}
	batch, err := signal.NewDecoder(signal.MustFingerprinter(signal.DefaultFingerprintFields), nil).
		DecodeAlertmanager(loadgen.NewWebhook(alerts...).JSON())
	require.NoError(b, err)
	out := make([][]byte, n)
	for i := range batch.Signals {
		out[i], err = signal.Encode(&batch.Signals[i])
		require.NoError(b, err)
	}
	return out
}

// BenchmarkStage_handle measures the deduper's own work on one signal:
// decoding it, deciding on it (in the in-memory store, so that Redis does
// not hide the rest) and encoding its event. 1,000 fingerprints, every
// message distinct: 0.1% new incidents, the rest occurrences.
func BenchmarkStage_handle(b *testing.B) {
	p := newPipeline(b)
	ctx := context.Background()
	a, err := app.New(ctx, p.cfg, quietLog(), app.Deduper, app.Options{MemoryStores: true})
	require.NoError(b, err)
	b.Cleanup(a.Close)
	st, err := a.Deduper(ctx)
	require.NoError(b, err)
	sigs := benchSignals(b, 1000)
	subject := p.subj.Signals(signal.SourceAlertmanager)
	b.SetBytes(int64(len(sigs[0])))
	b.ReportAllocs()
	i := 0
	cpu := testenv.ReadCPU(b, nil)
	for b.Loop() {
		m := &bus.Msg{Subject: subject, Data: sigs[i%len(sigs)], Header: nats.Header{jetstream.MsgIDHeader: {"m" + strconv.Itoa(i)}}}
		outs, err := st.Handle(ctx, m)
		if err != nil || len(outs) != 1 {
			b.Fatalf("handled %d: %d outputs, %v", i, len(outs), err)
		}
		i++
	}
	testenv.ReportCPU(b, nil, cpu)
}
