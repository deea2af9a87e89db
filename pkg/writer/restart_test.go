package writer

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// TestWriter_survivesAPIServerRestart stops the API server mid-stream
// (etcd keeps the data) and starts it again: every incident still ends as
// exactly one request with its exact count.
func TestWriter_survivesAPIServerRestart(t *testing.T) {
	h := startWriter(t)
	ns := h.namespace("prod-"+h.id, nil)
	const incidents = 60
	ids := make([]string, incidents)
	for i := range incidents {
		ids[i] = fmt.Sprintf("i%sr%02d", h.id, i)
	}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			e := event(fingerprintOf(ids[i]), ids[i], 1, 1, ns, signal.SeverityWarning)
			h.open(e)
			u := e
			u.Decision, u.Revision, u.Count = incident.DecisionOccurrence, 2, 5
			h.update(u)
		}
	}

	send(0, 20)
	h.waitWritten(40, 20*time.Second)
	apiServer := testEnv.ControlPlane.APIServer
	if err := apiServer.Stop(); err != nil {
		// Killed after StopTimeout: stopped all the same.
		require.ErrorContains(t, err, "timeout waiting for process", "stopping the API server")
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = apiServer.Start()
		}
	})
	t.Logf("api server stopped at %s", time.Now().Format("15:04:05.000"))
	send(20, incidents) // while the API server is away: the writer naks and waits
	// Down long enough for every message of the outage to be refused,
	// some of them more than once.
	require.Eventually(t, func() bool { return h.result("nak") >= 2*(incidents-20) }, 20*time.Second, 20*time.Millisecond,
		"writes fail while the API server is down")
	require.NoError(t, apiServer.Start(), "restarting the API server")
	restarted = true
	t.Logf("api server restarted at %s", time.Now().Format("15:04:05.000"))

	h.waitWritten(2*incidents, 60*time.Second)
	t.Logf("all acked at %s", time.Now().Format("15:04:05.000"))
	items := list(t, ns)
	byIncident := map[string]int{}
	for _, rr := range items {
		byIncident[rr.Spec.IncidentID]++
		if assert.NotNil(t, rr.Status.Occurrences, rr.Name) {
			assert.EqualValues(t, 5, rr.Status.Occurrences.Count, rr.Name)
		}
	}
	assert.Len(t, items, incidents)
	for _, id := range ids {
		assert.Equal(t, 1, byIncident[id], "incident %s", id)
	}
	assert.Zero(t, h.result("dlq"))
}
