package incident_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// BenchmarkUnmarshalEvent is what every consumer of an incident event
// pays to read it: a realistic signal (a KubePodCrashLooping alert, about
// 1.3 KB) in an event of the deduper.
func BenchmarkUnmarshalEvent(b *testing.B) {
	batch, err := signal.NewDecoder(signal.MustFingerprinter(signal.DefaultFingerprintFields), nil).
		DecodeAlertmanager(loadgen.NewWebhook(loadgen.PodAlert("KubePodCrashLooping", "shop", "web-0", time.Now())).JSON())
	if err != nil {
		b.Fatal(err)
	}
	sig, err := signal.Encode(&batch.Signals[0])
	if err != nil {
		b.Fatal(err)
	}
	data := fmt.Appendf(nil, `{"decision":"occurrence","incidentID":"i0123456789abcdef0123","fingerprint":%q,`+
		`"revision":7,"state":"firing","count":7,"firstSeen":"2026-03-01T12:00:00Z","lastSeen":"2026-03-01T12:05:00Z",`+
		`"route":"individual","signal":%s}`, batch.Signals[0].Fingerprint, sig)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu := testenv.ReadCPU(b, nil)
	for b.Loop() {
		var e incident.Event
		if err := incident.Unmarshal(data, &e); err != nil {
			b.Fatal(err)
		}
	}
	testenv.ReportCPU(b, nil, cpu)
}
