package loadgen

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sink is a receiver stand-in: it checks each webhook and answers as the
// receiver does.
type sink struct {
	t        *testing.T
	mu       sync.Mutex
	alerts   int
	requests atomic.Int64
	// unavailable answers this many requests with 503 first.
	unavailable atomic.Int64
	// closeEvery answers every n-th request with Connection: close.
	closeEvery int64
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	assert.Equal(s.t, http.MethodPost, r.Method)
	assert.Equal(s.t, "/api/v1/signals/alertmanager", r.URL.Path)
	assert.Equal(s.t, "Bearer tok", r.Header.Get("Authorization"))
	assert.Equal(s.t, "application/json", r.Header.Get("Content-Type"))
	b, err := io.ReadAll(r.Body)
	require.NoError(s.t, err)
	if s.unavailable.Add(-1) >= 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var wh Webhook
	require.NoError(s.t, json.Unmarshal(b, &wh))
	s.mu.Lock()
	s.alerts += len(wh.Alerts)
	s.mu.Unlock()
	if s.closeEvery > 0 && n%s.closeEvery == 0 {
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"accepted": len(wh.Alerts), "duplicates": 0, "rejected": []any{}})
}

func runAgainst(t *testing.T, s *sink, cfg Config) Report {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cfg.URL, cfg.Token = srv.URL+"/api/v1/signals/alertmanager", "tok"
	rep, err := Run(context.Background(), cfg, nil)
	require.NoError(t, err)
	return rep
}

func TestRun_sendsEveryAlertInBatches(t *testing.T) {
	s := &sink{t: t, closeEvery: 7}
	rep := runAgainst(t, s, Config{Alerts: 1050, BatchSize: 100, Concurrency: 4, Seed: 1})
	assert.Equal(t, 11, rep.Requests)
	assert.Equal(t, 1050, rep.Accepted)
	assert.Zero(t, rep.Errors)
	assert.Equal(t, 1050, s.alerts)
}

func TestRun_singleAlertPostsOverFewConnections(t *testing.T) {
	s := &sink{t: t, closeEvery: 50}
	rep := runAgainst(t, s, Config{Alerts: 500, BatchSize: 1, Concurrency: 8, DuplicateRatio: 1, Seed: 2})
	assert.Equal(t, 500, rep.Requests)
	assert.Equal(t, 500, rep.Accepted)
	assert.Zero(t, rep.Errors)
	assert.Equal(t, 1, rep.Expected.Incidents)
}

func TestRun_retriesA503(t *testing.T) {
	s := &sink{t: t}
	s.unavailable.Store(2)
	rep := runAgainst(t, s, Config{Alerts: 10, BatchSize: 10, Concurrency: 1, Seed: 3})
	assert.Equal(t, 1, rep.Requests)
	assert.Equal(t, 10, rep.Accepted)
	assert.Zero(t, rep.Errors)
	assert.EqualValues(t, 3, s.requests.Load())
}

func TestRun_withAClientUsesIt(t *testing.T) {
	s := &sink{t: t}
	var used atomic.Int64
	c := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		used.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	rep := runAgainst(t, s, Config{Alerts: 30, BatchSize: 10, Concurrency: 2, Seed: 4, Client: c})
	assert.Equal(t, 30, rep.Accepted)
	assert.EqualValues(t, 3, used.Load())
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPlan_expectedMatchesTheAlerts(t *testing.T) {
	alerts, exp := Plan(Config{Alerts: 2000, DuplicateRatio: 0.7, StormRatio: 0.1, MaxPerScope: 5, Seed: 5})
	require.Len(t, alerts, 2000)
	occ := map[string]int{}
	fps := map[string]bool{}
	storm := map[string]bool{}
	for _, a := range alerts {
		occ[a.Labels["namespace"]+"/"+a.Labels["pod"]]++
		fps[a.Fingerprint] = true
		assert.Equal(t, fingerprintOf(a.Labels), a.Fingerprint)
		if a.Labels["alertname"] == StormAlertname {
			storm[a.Labels["pod"]] = true
		}
	}
	assert.Equal(t, exp.Occurrences, occ)
	assert.Len(t, fps, exp.Incidents)
	assert.Len(t, storm, exp.StormIncidents)
	assert.Less(t, exp.Incidents, 1000, "about 30% are new")
}

func TestFingerprintOf_isStableAcrossLabelOrder(t *testing.T) {
	a := map[string]string{"alertname": "X", "pod": "p", "namespace": "n"}
	b := map[string]string{"namespace": "n", "pod": "p", "alertname": "X"}
	assert.Equal(t, fingerprintOf(a), fingerprintOf(b))
	assert.NotEqual(t, fingerprintOf(a), fingerprintOf(map[string]string{"alertname": "X", "pod": "q", "namespace": "n"}))
	// FNV-1a over "key\xffvalue\xff" for each sorted label.
	assert.Equal(t, "d2b371819297f98a", fingerprintOf(map[string]string{"a": "b"}))
}
