package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config shapes a load: how many alerts, how fast, in which batches, how
// many of them repeat an incident already sent, and an optional storm.
type Config struct {
	// URL is the receiver's Alertmanager endpoint.
	URL   string
	Token string
	// Alerts is the total number of alerts to send.
	Alerts int
	// BatchSize is the number of alerts per webhook.
	BatchSize int
	// Rate is alerts per second; 0 sends as fast as the receiver answers.
	Rate float64
	// Concurrency is the number of requests in flight.
	Concurrency int
	// DuplicateRatio is the share of alerts that repeat an incident
	// already sent (same labels, so the same fingerprint; a new delivery,
	// so it counts as an occurrence).
	DuplicateRatio float64
	// StormRatio is the share of new incidents that belong to one storm:
	// one alertname in one namespace, each on its own pod.
	StormRatio float64
	// Namespaces spread the non-storm incidents.
	Namespaces []string
	// MaxPerScope, when positive, caps how many non-storm incidents share
	// one alertname in one namespace (the aggregator's default storm
	// scope): every MaxPerScope incidents per namespace take the next
	// alertname (KubeContainerOOMKilled, KubeContainerOOMKilled-1, ...),
	// so at or below the storm rate threshold they stay individual
	// incidents and the load holds exactly one storm. Each alertname spans
	// len(Namespaces) scopes, so keep that at or below the pattern
	// threshold too. Zero sends every one as KubeContainerOOMKilled.
	MaxPerScope int
	// Seed makes a run repeatable.
	Seed uint64
	// Client is the HTTP client; nil sends over one keep-alive connection
	// per request in flight (plain http only; https needs a Client).
	Client *http.Client
}

// Report is what a run measured.
type Report struct {
	Requests   int           `json:"requests"`
	Alerts     int           `json:"alerts"`
	Accepted   int           `json:"accepted"`
	Duplicates int           `json:"duplicates"`
	Rejected   int           `json:"rejected"`
	Errors     int           `json:"errors"`
	Elapsed    time.Duration `json:"elapsed"`
	// AcceptedPerSec is accepted alerts per second of the run.
	AcceptedPerSec float64       `json:"acceptedPerSec"`
	P50            time.Duration `json:"p50"`
	P99            time.Duration `json:"p99"`
	P999           time.Duration `json:"p999"`
	Max            time.Duration `json:"max"`
	// Expected is what the pipeline should make of the load.
	Expected Expected `json:"expected"`
}

// Expected is the ground truth of a load: the incidents and occurrence
// counts a lossless, exact pipeline must end with.
type Expected struct {
	// Incidents counts distinct fingerprints sent.
	Incidents int `json:"incidents"`
	// StormIncidents counts the distinct storm pods among them.
	StormIncidents int `json:"stormIncidents"`
	// Occurrences maps a pod ("namespace/pod") to how often it was sent.
	Occurrences map[string]int `json:"-"`
	// order are the new incidents in sending order, for Outcome.
	order []pod
}

// StormAlertname and StormNamespace name the storm a load contains.
const (
	StormAlertname = "KubePodCrashLooping"
	StormNamespace = "storm"
)

// Plan generates the alerts of cfg in sending order.
func Plan(cfg Config) ([]Alert, Expected) {
	alerts := make([]Alert, 0, cfg.Alerts)
	exp := plan(cfg, func(a Alert) { alerts = append(alerts, a) })
	return alerts, exp
}

// pod names one incident of a plan: a repeat rebuilds its alert from it,
// so a plan keeps no alert (two maps each) after emitting it.
type pod struct{ name, namespace, pod string }

// plan calls emit with each alert of cfg in sending order and returns the
// ground truth of the load.
func plan(cfg Config, emit func(Alert)) Expected {
	r := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))
	nss := cfg.Namespaces
	if len(nss) == 0 {
		nss = []string{"payments", "checkout", "search", "identity"}
	}
	exp := Expected{Occurrences: map[string]int{}}
	base := time.Now().UTC().Truncate(time.Second)
	var pods []pod
	individual := 0
	for i := range cfg.Alerts {
		var p pod
		if len(pods) > 0 && r.Float64() < cfg.DuplicateRatio {
			// The same label set: the same fingerprint.
			p = pods[r.IntN(len(pods))]
		} else {
			n := len(pods)
			if r.Float64() < cfg.StormRatio {
				p = pod{StormAlertname, StormNamespace, fmt.Sprintf("storm-%06d", n)}
				exp.StormIncidents++
			} else {
				ns, name := nss[n%len(nss)], "KubeContainerOOMKilled"
				if cfg.MaxPerScope > 0 {
					ns = nss[individual%len(nss)]
					if g := individual / len(nss) / cfg.MaxPerScope; g > 0 {
						name = fmt.Sprintf("%s-%d", name, g)
					}
				}
				individual++
				p = pod{name, ns, fmt.Sprintf("app-%06d", n)}
			}
			pods = append(pods, p)
			exp.Incidents++
			exp.order = append(exp.order, p)
		}
		// A distinct delivery: Alertmanager would send a later startsAt
		// after the alert resolved and fired again.
		a := PodAlert(p.name, p.namespace, p.pod, base)
		a.StartsAt = base.Add(time.Duration(i) * time.Microsecond)
		exp.Occurrences[p.namespace+"/"+p.pod]++
		emit(a)
	}
	return exp
}

// Run sends the load of cfg and reports. progress, when not nil, gets a
// line a second.
func Run(ctx context.Context, cfg Config, progress io.Writer) (Report, error) {
	if cfg.BatchSize < 1 || cfg.Alerts < 1 || cfg.URL == "" {
		return Report{}, errors.New("loadgen: url, alerts and batch size are required")
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	newSender, err := senders(cfg)
	if err != nil {
		return Report{}, err
	}
	// Bodies are encoded before the clock starts, batch by batch as the
	// plan goes, so only the bodies stay in memory.
	var bodies [][]byte
	batch := make([]Alert, 0, cfg.BatchSize)
	flush := func() {
		if len(batch) > 0 {
			bodies = append(bodies, NewWebhook(batch...).JSON())
			batch = batch[:0]
		}
	}
	exp := plan(cfg, func(a Alert) {
		if batch = append(batch, a); len(batch) == cfg.BatchSize {
			flush()
		}
	})
	flush()

	rep := Report{Alerts: cfg.Alerts, Expected: exp}
	var mu sync.Mutex
	lat := make([]time.Duration, 0, len(bodies))
	var accepted, done atomic.Int64
	work := make(chan []byte)
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			send := newSender()
			defer send.close()
			for body := range work {
				d, res, err := post(ctx, send, body)
				mu.Lock()
				rep.Requests++
				lat = append(lat, d)
				if err != nil {
					rep.Errors++
				} else {
					rep.Accepted += res.Accepted
					rep.Duplicates += res.Duplicates
					rep.Rejected += len(res.Rejected)
				}
				mu.Unlock()
				accepted.Add(int64(res.Accepted))
				done.Add(1)
			}
		})
	}

	start := time.Now()
	stopProgress := make(chan struct{})
	if progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					el := time.Since(start).Seconds()
					fmt.Fprintf(progress, "loadgen: %d/%d requests, %d alerts accepted, %.0f alerts/s\n", done.Load(), len(bodies), accepted.Load(), float64(accepted.Load())/el)
				}
			}
		}()
	}
	perBatch := time.Duration(0)
	if cfg.Rate > 0 {
		perBatch = time.Duration(float64(cfg.BatchSize) / cfg.Rate * float64(time.Second))
	}
send:
	for i, b := range bodies {
		if perBatch > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * perBatch)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					break send
				}
			}
		}
		select {
		case work <- b:
		case <-ctx.Done():
			break send
		}
	}
	close(work)
	wg.Wait()
	close(stopProgress)
	rep.Elapsed = time.Since(start)
	rep.AcceptedPerSec = float64(rep.Accepted) / rep.Elapsed.Seconds()
	slices.Sort(lat)
	if len(lat) > 0 {
		rep.P50, rep.P99, rep.P999, rep.Max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)*999/1000], lat[len(lat)-1]
	}
	return rep, ctx.Err()
}

// response is the part of the receiver's 202 body loadgen reads.
type response struct {
	Accepted   int               `json:"accepted"`
	Duplicates int               `json:"duplicates"`
	Rejected   []json.RawMessage `json:"rejected"`
}

// post sends one webhook, retrying a 503 as Alertmanager would.
func post(ctx context.Context, send sender, body []byte) (time.Duration, response, error) {
	start := time.Now()
	var res response
	for attempt := 0; ; attempt++ {
		code, b, err := send.post(ctx, body)
		if err == nil {
			switch {
			case code == http.StatusAccepted:
				err = json.Unmarshal(b, &res)
				return time.Since(start), res, err
			case code != http.StatusServiceUnavailable:
				return time.Since(start), res, fmt.Errorf("status %d: %s", code, b)
			}
		}
		if attempt >= 20 || ctx.Err() != nil {
			if err == nil {
				err = errors.New("receiver kept answering 503")
			}
			return time.Since(start), res, err
		}
		select {
		case <-time.After(time.Duration(100*(attempt+1)) * time.Millisecond):
		case <-ctx.Done():
		}
	}
}
