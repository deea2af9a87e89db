package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/app"
	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/test/testenv"
)

// stage runs the named stages of cfg in a process of their own (state in
// memory) until the test ends, and returns it.
func stage(t *testing.T, cfg config.Config, names ...string) *app.App {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), names[0], app.Options{MemoryStores: true})
	require.NoError(t, err)
	stages, err := a.Build(ctx, names...)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, stages...) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		a.Close()
	})
	return a
}

// postOne posts one alert and returns the status and the Retry-After
// and problem title of a 503.
func postOne(t testing.TB, url string, a loadgen.Alert) (code int, retryAfter, title string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(loadgen.NewWebhook(a).JSON()))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var p struct {
		Title string `json:"title"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&p)
	return resp.StatusCode, resp.Header.Get("Retry-After"), p.Title
}

// counter reads a counter without labels from reg.
func counter(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// streamMsgs is how many messages stream holds now.
func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// TestBackpressure_fullSignalsStreamRefusesInsteadOfDropping: a stalled
// deduper and a signals stream of 32 KiB (about 20 signals).
//
//	t=0    the receiver runs, the deduper does not: 200 alerts are posted
//	       one a request. The first fit and get 202; the rest get 503
//	       with Retry-After ("bus full"), each counted in
//	       stormweir_receiver_bus_full_total. The stream holds exactly the
//	       accepted ones: none was dropped for the newer.
//	then   the deduper starts and processes every accepted signal; the
//	       stream lets them go (interest retention) and keeps none.
//	retry  the refused alerts are posted again, as Alertmanager does, until
//	       each gets 202: every one of the 200 is decided once (one new
//	       incident each in the archive), and the reviewed archive holds
//	       all 200 signals.
func TestBackpressure_fullSignalsStreamRefusesInsteadOfDropping(t *testing.T) {
	n := testenv.StartNATS(t)
	cfg := testenv.Config(n.URL)
	cfg.Bus.Signals.MaxBytes = 32 << 10
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	require.NoError(t, cfg.Validate())
	rcv := stage(t, cfg, app.Receiver)
	addr, err := rcv.HealthAddr()
	require.NoError(t, err)
	url := "http://" + addr + receiver.PathAlertmanager
	subj := bus.NewSubjects(cfg.Bus.Prefix)
	js := rcv.Process.Bus.JS

	const alerts = 200
	now := time.Now()
	all := make([]loadgen.Alert, alerts)
	var accepted, refused []int
	for i := range all {
		all[i] = loadgen.PodAlert("KubePodCrashLooping", "shop", fmt.Sprintf("api-%d", i), now)
		code, retryAfter, title := postOne(t, url, all[i])
		switch code {
		case http.StatusAccepted:
			accepted = append(accepted, i)
		case http.StatusServiceUnavailable:
			refused = append(refused, i)
			assert.NotEmpty(t, retryAfter, "a 503 tells the sender when to retry")
			assert.Equal(t, "bus full", title)
		default:
			t.Fatalf("alert %d: status %d", i, code)
		}
	}
	t.Logf("stalled deduper: %d accepted, %d refused", len(accepted), len(refused))
	require.NotEmpty(t, accepted)
	require.NotEmpty(t, refused, "the stream filled up")
	assert.Equal(t, float64(len(refused)), counter(t, rcv.Process.Registry, "stormweir_receiver_bus_full_total"))
	assert.Equal(t, uint64(len(accepted)), streamMsgs(t, js, subj.StreamName(bus.StreamSignals)),
		"the stream keeps every accepted signal and no other")

	stage(t, cfg, app.Deduper)
	testenv.WaitAcked(t, js, subj.StreamName(bus.StreamSignals), app.Deduper, 20*time.Second)
	require.Len(t, testenv.ReadArchived(t, js, subj.StreamName(bus.StreamIncidents), subj.DedupNew()), len(accepted),
		"every accepted signal was decided once the deduper ran")
	require.Eventually(t, func() bool { return streamMsgs(t, js, subj.StreamName(bus.StreamSignals)) == 0 }, 10*time.Second, 10*time.Millisecond,
		"processed and archived signals leave the stream")

	for _, i := range refused {
		require.Eventually(t, func() bool {
			code, _, _ := postOne(t, url, all[i])
			return code == http.StatusAccepted
		}, 20*time.Second, 10*time.Millisecond, "alert %d accepted on a retry", i)
	}
	testenv.WaitAcked(t, js, subj.StreamName(bus.StreamSignals), app.Deduper, 20*time.Second)
	assert.Len(t, testenv.ReadArchived(t, js, subj.StreamName(bus.StreamIncidents), subj.DedupNew()), alerts,
		"every alert decided once: none lost, none twice")
	assert.Len(t, testenv.ReadArchived(t, js, subj.StreamName(bus.StreamSignals)), alerts, "the archive keeps every signal for review")
	assert.Zero(t, streamMsgs(t, js, subj.StreamName(bus.StreamDLQ)), "nothing dead-lettered")
}

// TestBackpressure_fullStoreAnswers503AndResumes: the JetStream store is
// full, filled by another stream on the same server (a small
// max_file_store).
//
//	t=0    the pipeline's first stage runs on file streams; 10 alerts are
//	       accepted and decided.
//	full   another stream fills the server's 4 MiB store: an alert is
//	       answered 503 with Retry-After, counted as bus full; nothing
//	       is stored.
//	freed  the other stream is deleted: the same alert, posted again, is
//	       accepted without any restart, and the deduper decides it. All
//	       11 alerts were decided once.
func TestBackpressure_fullStoreAnswers503AndResumes(t *testing.T) {
	n := testenv.StartNATSWith(t, &server.Options{ServerName: "stormweir-full", JetStreamMaxStore: 4 << 20})
	cfg := testenv.Config(n.URL)
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ, &cfg.Bus.Archive.Signals, &cfg.Bus.Archive.Incidents} {
		s.Storage, s.MaxBytes = "file", 256<<10
	}
	cfg.Receiver.Listen = "127.0.0.1:0"
	cfg.Receiver.Auth.Tokens = []string{token}
	require.NoError(t, cfg.Validate())
	rcv := stage(t, cfg, app.Receiver, app.Deduper)
	addr, err := rcv.HealthAddr()
	require.NoError(t, err)
	url := "http://" + addr + receiver.PathAlertmanager
	subj := bus.NewSubjects(cfg.Bus.Prefix)
	js := rcv.Process.Bus.JS
	ctx := context.Background()

	now := time.Now()
	for i := range 10 {
		code, _, _ := postOne(t, url, loadgen.PodAlert("KubePodCrashLooping", "shop", fmt.Sprintf("api-%d", i), now))
		require.Equal(t, http.StatusAccepted, code)
	}

	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	chunk := make([]byte, 64<<10)
	for {
		if _, err := js.Publish(ctx, "other.fill", chunk); err != nil {
			require.True(t, bus.IsFull(err), "the store is full: %v", err)
			break
		}
	}
	last := loadgen.PodAlert("KubePodCrashLooping", "shop", "api-10", now)
	code, retryAfter, title := postOne(t, url, last)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.NotEmpty(t, retryAfter)
	assert.Equal(t, "bus full", title)
	assert.Equal(t, float64(1), counter(t, rcv.Process.Registry, "stormweir_receiver_bus_full_total"))

	require.NoError(t, js.DeleteStream(ctx, "OTHER"))
	require.Eventually(t, func() bool {
		code, _, _ := postOne(t, url, last)
		return code == http.StatusAccepted
	}, 20*time.Second, 50*time.Millisecond, "intake resumes once the store has room")
	testenv.WaitAcked(t, js, subj.StreamName(bus.StreamSignals), app.Deduper, 20*time.Second)
	assert.Len(t, testenv.ReadArchived(t, js, subj.StreamName(bus.StreamIncidents), subj.DedupNew()), 11,
		"every accepted alert decided once")
	assert.Zero(t, streamMsgs(t, js, subj.StreamName(bus.StreamDLQ)), "nothing dead-lettered")
}
