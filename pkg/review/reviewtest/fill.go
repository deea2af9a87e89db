// Package reviewtest records streams for the review's tests and
// benchmarks: Fill writes realistic streams directly (BenchmarkReplay and
// the replay scenario of test/bench), and Scenario records a new
// incident, a flap, a storm and a rejected alert with a real pipeline
// in-process (the review's and the review UI's tests).
package reviewtest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Fill records what a pipeline would have after signals alerts of
// incidents crash-looping pods (realistic Alertmanager signals, about
// 1.2 KB each): every signal as the receiver published it, and the
// deduper's event for it (new, then occurrences) carrying the signal's
// bytes. It returns the fingerprint of the first incident.
func Fill(ctx context.Context, js jetstream.JetStream, cfg config.Config, signals, incidents int) (string, error) {
	if err := bus.EnsureStreams(ctx, js, cfg.Bus); err != nil {
		return "", err
	}
	pub := bus.NewPublisher(js, 30*time.Second)
	defer pub.Close()
	subj := bus.NewSubjects(cfg.Bus.Prefix)
	base := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	var one string
	const batch = 1000
	for i := 0; i < signals; i += batch {
		outs := make([]bus.Output, 0, 2*batch)
		for j := i; j < min(i+batch, signals); j++ {
			inc, occ := j%incidents, j/incidents
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
			if err != nil {
				return "", err
			}
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
			if err != nil {
				return "", err
			}
			eh := nats.Header{}
			eh.Set(bus.HeaderFingerprint, sig.Fingerprint)
			eh.Set(bus.HeaderIncident, id)
			outs = append(outs, bus.Output{Subject: subject, Data: evData, MsgID: "d:" + sig.ID, Header: eh})
		}
		if _, err := pub.Publish(ctx, outs...); err != nil {
			return "", err
		}
	}
	// Reviews read the archives, which source the streams asynchronously.
	if err := bus.WaitArchived(ctx, js, cfg.Bus.Prefix); err != nil {
		return "", err
	}
	return one, nil
}

// ReadRaw reads every message of the signals and decisions streams under
// prefix with the JetStream ordered consumer and drops it: the ceiling a
// review's reading is measured against. It returns the messages read.
func ReadRaw(ctx context.Context, js jetstream.JetStream, prefix string) (int, error) {
	n := 0
	for _, name := range bus.ReviewStreams(prefix)[:2] {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return n, err
		}
		last := st.CachedInfo().State.LastSeq
		if last == 0 {
			continue
		}
		cons, release, err := bus.OpenReader(ctx, st, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return n, err
		}
		defer release()
		it, err := cons.Messages(jetstream.PullMaxMessages(4096))
		if err != nil {
			return n, err
		}
		for {
			m, err := it.Next()
			if err != nil {
				it.Stop()
				return n, err
			}
			n++
			md, err := m.Metadata()
			if err != nil || md.Sequence.Stream >= last {
				it.Stop()
				if err != nil {
					return n, err
				}
				break
			}
		}
	}
	return n, nil
}
