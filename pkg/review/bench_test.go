package review_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/signal"
	"github.com/stormweir/stormweir/test/testenv"
)

// benchSignals is the size of the recorded range the replay benchmark
// reads: 100,000 signals of 1,000 incidents (100 each), and the deduper's
// event for each, on file-backed streams of a local nats-server.
const (
	benchSignals   = 100_000
	benchIncidents = 1_000
)

// fillStreams records what a pipeline would have: every signal as the
// receiver published it, and the deduper's event for it carrying the
// signal's bytes. It returns the fingerprint of one incident.
func fillStreams(b *testing.B, js jetstream.JetStream, cfg config.Config) string {
	b.Helper()
	ctx := context.Background()
	require.NoError(b, bus.EnsureStreams(ctx, js, cfg.Bus))
	pub := bus.NewPublisher(js, 30*time.Second)
	defer pub.Close()
	subj := bus.NewSubjects(cfg.Bus.Prefix)
	base := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	var one string
	const batch = 1000
	for i := 0; i < benchSignals; i += batch {
		outs := make([]bus.Output, 0, 2*batch)
		for j := i; j < i+batch; j++ {
			inc, occ := j%benchIncidents, j/benchIncidents
			sig := signal.Signal{
				Source: signal.SourceAlertmanager, Name: "KubePodCrashLooping", Status: signal.StatusFiring, Severity: signal.SeverityCritical,
				Namespace: "payments", Target: signal.Target{Kind: "Pod", Name: fmt.Sprintf("api-%d", inc), Namespace: "payments"},
				Labels: map[string]string{"alertname": "KubePodCrashLooping", "namespace": "payments", "pod": fmt.Sprintf("api-%d", inc),
					"container": "api", "job": "kube-state-metrics", "severity": "critical", "cluster": "prod-eu-1"},
				Annotations: map[string]string{"summary": "Pod is crash looping.",
					"description": "Pod payments/api is in waiting state (reason: \"CrashLoopBackOff\").",
					"runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping"},
				StartsAt: base, ReceivedAt: base.Add(time.Duration(j) * time.Millisecond),
				GeneratorURL: "http://prometheus-k8s-0:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
			}
			sig.Fingerprint = fmt.Sprintf("%064x", inc+1)
			sig.ID = fmt.Sprintf("am-%d-%d", inc, occ)
			if one == "" {
				one = sig.Fingerprint
			}
			data, err := signal.Encode(&sig)
			require.NoError(b, err)
			h := nats.Header{}
			h.Set(bus.HeaderFingerprint, sig.Fingerprint)
			outs = append(outs, bus.Output{Subject: subj.Signals(sig.Source), Data: data, MsgID: sig.ID, Header: h})

			id := record.IncidentID(sig.Fingerprint, fmt.Sprintf("am-%d-0", inc))
			ev := incident.Event{Decision: incident.DecisionOccurrence, IncidentID: id, Fingerprint: sig.Fingerprint, Revision: int64(occ + 1),
				State: incident.StateFiring, Count: int64(occ + 1), FirstSeen: base, LastSeen: sig.ReceivedAt, Route: incident.RouteIndividual, Signal: data}
			subject := subj.IncidentsUpdate()
			if occ == 0 {
				ev.Decision, subject, ev.Route = incident.DecisionNew, subj.DedupNew(), ""
			}
			evData, err := incident.Marshal(&ev)
			require.NoError(b, err)
			eh := nats.Header{}
			eh.Set(bus.HeaderFingerprint, sig.Fingerprint)
			eh.Set(bus.HeaderIncident, id)
			outs = append(outs, bus.Output{Subject: subject, Data: evData, MsgID: "d:" + sig.ID, Header: eh})
		}
		_, err := pub.Publish(ctx, outs...)
		require.NoError(b, err)
	}
	return one
}

// BenchmarkReplay reads a recorded range of 100,000 signals (and their
// 100,000 decisions) from a local file-backed stream: the JetStream
// ordered consumer alone (the ceiling: every message read and dropped),
// the timeline of one incident, every timeline, and a what-if. Each
// reports signals/s; the review runs report their share of the ceiling
// measured in the same run.
func BenchmarkReplay(b *testing.B) {
	nt := testenv.StartNATS(b)
	cfg := testenv.Config(nt.URL)
	for _, s := range []*config.Stream{&cfg.Bus.Signals, &cfg.Bus.Incidents, &cfg.Bus.DLQ} {
		s.Storage, s.MaxBytes = "file", 1<<30
	}
	nc, err := nats.Connect(nt.URL)
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	fp := fillStreams(b, js, cfg)
	ctx := context.Background()
	streams := bus.ReviewStreams(cfg.Bus.Prefix)

	var ceiling float64
	rate := func(b *testing.B) float64 {
		r := float64(benchSignals) * float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(r, "signals/s")
		if ceiling > 0 {
			b.ReportMetric(100*r/ceiling, "%ceiling")
		}
		return r
	}
	b.Run("ordered-consumer", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, st := range streams[:2] {
				require.NoError(b, review.ReadStream(ctx, js, st, review.Selector{}, nil, func(*review.Msg) error { n++; return nil }))
			}
			require.Equal(b, 2*benchSignals, n)
		}
		ceiling = rate(b)
	})
	b.Run("one-incident", func(b *testing.B) {
		for b.Loop() {
			rep, err := review.Read(ctx, js, cfg.Bus.Prefix, review.Selector{Fingerprint: fp}, nil)
			require.NoError(b, err)
			require.Len(b, rep.Timelines, 1)
			require.Len(b, rep.Timelines[0].Rows, 101)
		}
		rate(b)
	})
	b.Run("all-incidents", func(b *testing.B) {
		for b.Loop() {
			rep, err := review.Read(ctx, js, cfg.Bus.Prefix, review.Selector{}, nil)
			require.NoError(b, err)
			require.Len(b, rep.Timelines, benchIncidents)
		}
		rate(b)
	})
	b.Run("what-if", func(b *testing.B) {
		alt := cfg
		alt.Aggregator.RateThreshold = 2000
		for b.Loop() {
			d, err := review.WhatIf(ctx, js, cfg.Bus.Prefix, review.Selector{}, alt, []string{"aggregator.rate_threshold=2000"}, nil)
			require.NoError(b, err)
			require.Zero(b, d.Incidents, "the bench records no routes")
		}
		rate(b)
	})
}
