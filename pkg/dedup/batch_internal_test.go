package dedup

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/bus"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
	"github.com/stormweir/stormweir/pkg/signal"
)

// TestBatcher_coalescesFreshDecisionsPerIncident: of one batch's fresh
// decisions on one incident and subject, every one publishes the newest
// revision's event under the newest's msg-id; a new incident's event, a
// redelivery's, another incident's, a failure and a decision without an
// event stay their own.
func TestBatcher_coalescesFreshDecisionsPerIncident(t *testing.T) {
	s := &Stage{subj: bus.NewSubjects("stormweir")}
	rec := func(id string, rev int64, route string) record.Record {
		return record.Record{IncidentID: id, Fingerprint: "fp-" + id, State: incident.StateFiring, Count: rev, Revision: rev, Route: route}
	}
	resps := []record.DecideResponse{
		{Result: record.Result{Decision: incident.DecisionNew, Record: rec("i1", 1, "")}},
		{Result: record.Result{Decision: incident.DecisionOccurrence, Record: rec("i1", 2, "")}},
		{Result: record.Result{Decision: incident.DecisionOccurrence, Record: rec("i1", 3, "")}},
		{Result: record.Result{Decision: incident.DecisionOccurrence, Duplicate: true, Record: rec("i1", 3, "")}},
		{Result: record.Result{Decision: incident.DecisionOccurrence, Record: rec("i2", 7, incident.RouteIndividual)}},
		{Result: record.Result{Decision: incident.DecisionOccurrence, Record: rec("i2", 5, incident.RouteIndividual)}},
		{Err: errors.New("redis away")},
		{Result: record.Result{Decision: incident.DecisionResolvedUnknown}},
	}
	b := newBatcher(func(_ context.Context, reqs []record.DecideRequest) []record.DecideResponse {
		require.Len(t, reqs, len(resps))
		return resps
	}, s.output)
	calls := make([]*call, len(resps))
	for i := range calls {
		id := "m" + string(rune('0'+i))
		h := nats.Header{jetstream.MsgIDHeader: {id}, bus.HeaderReceivedAt: {"t" + id}}
		calls[i] = &call{sig: &signal.Head{}, msgID: id, in: &bus.Msg{Data: []byte(`{}`), Header: h}}
	}
	b.exec(context.Background(), calls)
	ids := func(i int) (string, string) {
		c := calls[i]
		require.NoError(t, c.err, "call %d", i)
		require.True(t, c.ok, "call %d publishes", i)
		return c.out.MsgID, c.out.Subject
	}
	id, subj := ids(0)
	assert.Equal(t, OutputMsgID("m0"), id, "the new incident's event is its own")
	assert.Equal(t, s.subj.DedupNew(), subj)
	for _, i := range []int{1, 2} {
		id, subj := ids(i)
		assert.Equal(t, OutputMsgID("m2"), id, "call %d publishes the newest revision's event", i)
		assert.Equal(t, s.subj.DedupUnrouted(), subj)
		assert.Equal(t, "tm2", calls[i].out.Header.Get(bus.HeaderReceivedAt), "with the newest's receipt time")
	}
	id, _ = ids(3)
	assert.Equal(t, OutputMsgID("m3"), id, "a redelivery republishes its own event")
	for _, i := range []int{4, 5} {
		id, subj := ids(i)
		assert.Equal(t, OutputMsgID("m4"), id, "call %d publishes revision 7's event", i)
		assert.Equal(t, s.subj.IncidentsUpdate(), subj)
	}
	assert.Error(t, calls[6].err, "a failed decision fails alone")
	assert.NoError(t, calls[7].err)
	assert.False(t, calls[7].ok, "resolved_unknown publishes nothing")
}

// TestBatcher_decidesEveryCallOnce: concurrent calls all return, each
// decided exactly once, in batches of at most maxBatch.
func TestBatcher_decidesEveryCallOnce(t *testing.T) {
	const n = 1000
	var mu sync.Mutex
	seen := map[string]int{}
	b := newBatcher(func(_ context.Context, reqs []record.DecideRequest) []record.DecideResponse {
		assert.LessOrEqual(t, len(reqs), maxBatch)
		out := make([]record.DecideResponse, len(reqs))
		mu.Lock()
		defer mu.Unlock()
		for i, r := range reqs {
			seen[r.MsgID]++
			out[i].Result = record.Result{Decision: incident.DecisionOccurrence, Record: record.Record{IncidentID: "i", Revision: int64(len(seen))}}
		}
		return out
	}, func(c *call) (bus.Output, bool, error) {
		return bus.Output{Subject: "s", MsgID: OutputMsgID(c.msgID)}, true, nil
	})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := &call{sig: &signal.Head{}, msgID: strconv.Itoa(i)}
			assert.NoError(t, b.run(context.Background(), c))
			assert.True(t, c.ok)
		})
	}
	wg.Wait()
	assert.Len(t, seen, n)
	for id, k := range seen {
		assert.Equal(t, 1, k, "call %s decided once", id)
	}
}
