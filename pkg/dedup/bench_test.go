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
	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/redisclient"
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

// BenchmarkStage_duplicateBacklog measures the deduper through JetStream
// and its own Redis server on the duplicate path: b.N distinct signals of
// one incident wait in the stream (as when a flood outruns the deduper),
// then one replica decides them all. It reports the events published per
// signal (what the next stage reads) and the CPU time of this process
// (deduper and the embedded nats-server) and of Redis per signal.
//
//	go test -run XXX -bench BenchmarkStage_duplicateBacklog -benchtime 20000x ./pkg/dedup
func BenchmarkStage_duplicateBacklog(b *testing.B) {
	p := newPipeline(b)
	r := testenv.OwnRedis(b)
	c, err := redisclient.New(redisConfig(r.Addr))
	require.NoError(b, err)
	b.Cleanup(func() { _ = c.Close() })
	store := record.NewRedisStore(c, r.Prefix, config.DefaultDedup(), clock.Real{})
	p.cfg.Bus.Consumer.Concurrency = config.DefaultBus().Consumer.Concurrency
	p.publish(b, firingSignals("backlog", b.N, 1)...)
	b.ResetTimer()
	cpu := testenv.ReadCPU(b, c)
	p.start(b, store)
	p.waitSettled(b, uint64(b.N), 10*time.Minute)
	b.StopTimer()
	testenv.ReportCPU(b, c, cpu)
	subj := p.subjectCounts(b, bus.StreamIncidents)
	b.ReportMetric(float64(subj[p.subj.DedupUnrouted()]+subj[p.subj.DedupNew()])/float64(b.N), "events/signal")
	total, _ := sumCounts(b, store, "backlog", 1)
	require.EqualValues(b, b.N, total, "every signal counted once")
}
