package record_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/record"
)

func TestRefresh(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := record.Record{IncidentID: "i1", Fingerprint: "fp", State: incident.StateResolved, Count: 5, Flaps: 1,
		FirstSeen: t0, LastSeen: t0.Add(time.Minute), ResolvedAt: t0.Add(2 * time.Minute), Revision: 7, Route: incident.RouteIndividual}
	fromRecord := incident.Event{IncidentID: "i1", Fingerprint: "fp", Revision: 7, State: incident.StateResolved, Count: 5, Flaps: 1,
		FirstSeen: t0, LastSeen: t0.Add(time.Minute), ResolvedAt: t0.Add(2 * time.Minute), Route: incident.RouteIndividual}
	older := incident.Event{IncidentID: "i1", Fingerprint: "fp", Revision: 3, State: incident.StateFiring, Count: 3, FirstSeen: t0, LastSeen: t0}
	tests := []struct {
		name    string
		in      incident.Event
		changed bool
		want    incident.Event
	}{
		{"a new event takes the whole record", incident.Event{Decision: incident.DecisionNew}, true, withDecision(fromRecord, incident.DecisionNew)},
		{"an older event of the incident takes its newer state", older, true, fromRecord},
		{"the same revision stays", withRevision(older, 7), false, withRevision(older, 7)},
		{"a newer event stays", withRevision(older, 9), false, withRevision(older, 9)},
		{"another incident's event stays", incident.Event{IncidentID: "i2", Revision: 1}, false, incident.Event{IncidentID: "i2", Revision: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.in
			assert.Equal(t, tc.changed, record.Refresh(&e, &rec))
			assert.Equal(t, tc.want, e)
		})
	}
}

func withDecision(e incident.Event, d incident.Decision) incident.Event { e.Decision = d; return e }
func withRevision(e incident.Event, r int64) incident.Event             { e.Revision = r; return e }
