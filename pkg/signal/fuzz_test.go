package signal

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// addSeeds seeds f with small bodies. The testdata files (up to 9 KB) are
// the unit tests' business: as seeds, every new input the mutator derived
// from them was minimized for up to a minute, and the workers spent the
// whole fuzz time doing that instead of fuzzing (hack/fuzz.sh now also
// fails a run that executes too few inputs).
func addSeeds(f *testing.F, seeds ...string) {
	f.Helper()
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

func FuzzDecodeAlertmanager(f *testing.F) {
	addSeeds(f,
		`{"version":"4","status":"firing","truncatedAlerts":2,"groupKey":"{}:{alertname=\"A\"}","alerts":[{"status":"firing","labels":{"alertname":"KubePodCrashLooping","namespace":"payments","pod":"api-1","severity":"critical","cluster":"eu"},"annotations":{"summary":"s"},"startsAt":"2025-03-14T09:21:37.512Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://p/g","fingerprint":"5a1f0c93d2b8e417"}]}`,
		`{"alerts":[{"status":"resolved","labels":{"alertname":"NodeDown","node":"n1","exported_namespace":"x","severity":"info"},"endsAt":"2025-03-14T09:22:00Z"},{"labels":{}}]}`,
		`{"version":"4","status":"firing","alerts":[{"labels":{"alertname":"A","exported_pod":"p","node":"n"},"startsAt":"2025-03-14T09:21:37+14:00"},null,1,{"labels":{"alertname":"B"},"endsAt":"9999-12-31T23:59:59Z"}]}`,
		`{"version":"4","alerts":[{"status":"resolved","labels":{"alertname":"A","severity":"none","cluster":"\u00e9"},"annotations":{}}]}`,
		// Namespaces at the CRD's bound: 64 characters (rejected), and 63
		// that are no DNS label (written to the fallback namespace).
		`{"alerts":[{"status":"firing","labels":{"alertname":"A","namespace":"n234567890123456789012345678901234567890123456789012345678901234","pod":"p"}},{"status":"firing","labels":{"alertname":"B","exported_namespace":"Team_Payments.Prod_34567890123456789012345678901234567890123456","node":"n"}}]}`,
	)
	d := newTestDecoder(f)
	fp := MustFingerprinter(DefaultFingerprintFields)
	wr := newWritability(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := d.DecodeAlertmanager(body)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidPayload)
			require.Nil(t, b)
			return
		}
		// Count the items independently, with encoding/json.
		var w struct {
			Alerts []json.RawMessage `json:"alerts"`
		}
		require.NoError(t, json.Unmarshal(body, &w), "an accepted body is valid JSON")
		require.Equal(t, len(w.Alerts), len(b.Signals)+len(b.Rejected)+len(b.Ignored), "every alert is accounted for")
		checkBatch(t, fp, b)
		wr.check(t, b)
	})
}

func FuzzDecodeGrafana(f *testing.F) {
	addSeeds(f,
		`{"version":"1","orgId":2,"state":"alerting","alerts":[{"status":"firing","labels":{"alertname":"A","pod":"p","namespace":"n"},"annotations":{"values":"x"},"startsAt":"2021-10-12T09:51:03.157076+02:00","endsAt":"0001-01-01T00:00:00Z","fingerprint":"c6eadffa33fcdf37","silenceURL":"s","dashboardURL":"","panelURL":"p","imageURL":"i","values":{"B":44.23943737541908,"C":1e308}}]}`,
		`{"alerts":[{"status":"firing","labels":{"alertname":"TestAlert","instance":"Grafana"}},{"status":"resolved","labels":{"alertname":"B"},"values":null},null,{"values":{"A":"x"}}]}`,
	)
	d := newTestDecoder(f)
	fp := MustFingerprinter(DefaultFingerprintFields)
	wr := newWritability(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := d.DecodeGrafana(body)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidPayload)
			require.Nil(t, b)
			return
		}
		var w struct {
			Alerts []json.RawMessage `json:"alerts"`
		}
		require.NoError(t, json.Unmarshal(body, &w), "an accepted body is valid JSON")
		require.Equal(t, len(w.Alerts), len(b.Signals)+len(b.Rejected)+len(b.Ignored), "every alert is accounted for")
		checkBatch(t, fp, b)
		wr.check(t, b)
	})
}

func FuzzDecodeKubernetesEvents(f *testing.F) {
	addSeeds(f,
		`{"kind":"Event","apiVersion":"v1","metadata":{"name":"e.1","namespace":"payments","uid":"u1"},"involvedObject":{"kind":"Pod","namespace":"payments","name":"api-1"},"reason":"BackOff","message":"m","source":{"component":"kubelet","host":"h"},"firstTimestamp":"2025-03-14T09:19:02Z","lastTimestamp":"2025-03-14T09:31:44Z","count":14,"type":"Warning"}`,
		`{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e.2","namespace":"ns","uid":"u2"},"eventTime":"2025-03-14T09:19:02.000001Z","reportingController":"default-scheduler","regarding":{"kind":"Pod","namespace":"ns","name":"p"},"reason":"FailedScheduling","note":"n","type":"Warning","action":"Scheduling"}`,
		`[{"type":"Warning","reason":"R","metadata":{"uid":"u"},"involvedObject":{"kind":"Node","name":"n"},"count":-3,"series":{"count":2147483647,"lastObservedTime":"2025-03-14T09:21:37.123456+05:30"}}]`,
		`{"apiVersion":"events.k8s.io/v1","type":"Warning","reason":"R","metadata":{"name":"e","annotations":{}},"regarding":{"kind":"Pod","name":"p"},"deprecatedSource":{"host":"h"}}`,
		`{"kind":"List","items":[null,{},{"type":"Normal"}]}`,
		`[{"type":"Warning","reason":"R","clusterName":"c","metadata":{"uid":"u"},"involvedObject":{"kind":"Pod","name":"p"},"count":"-0","lastTimestamp":"2025-03-14 09:21:37.5 +0530 IST m=+1.5"}]`,
	)
	d := newTestDecoder(f)
	fp := MustFingerprinter(DefaultFingerprintFields)
	wr := newWritability(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := d.DecodeKubernetesEvents(body)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidPayload)
			require.Nil(t, b)
			return
		}
		require.Equal(t, kubeItemCount(t, body), len(b.Signals)+len(b.Rejected)+len(b.Ignored), "every event is accounted for")
		checkBatch(t, fp, b)
		wr.check(t, b)
	})
}

// kubeItemCount counts the events of an accepted body with encoding/json:
// the elements of a bare array or of a list's items, or 1 for one event.
func kubeItemCount(t *testing.T, body []byte) int {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var items []json.RawMessage
		require.NoError(t, json.Unmarshal(body, &items), "an accepted body is valid JSON")
		return len(items)
	}
	var l struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	require.NoError(t, json.Unmarshal(body, &l), "an accepted body is valid JSON")
	if l.Items != nil || l.Kind == "EventList" || l.Kind == "List" {
		return len(l.Items)
	}
	return 1
}

// checkBatch asserts that every accepted signal is representable: what the
// receiver publishes can be read back exactly by every later stage.
func checkBatch(t *testing.T, fp *Fingerprinter, b *Batch) {
	t.Helper()
	for _, r := range b.Rejected {
		assert.NotEmpty(t, r.Reason, "rejection %d has a reason", r.Index)
	}
	for i := range b.Signals {
		s := &b.Signals[i]
		require.NotEmpty(t, s.Name)
		require.LessOrEqual(t, len(s.Name), MaxNameLen)
		require.Contains(t, []Status{StatusFiring, StatusResolved}, s.Status)
		require.Contains(t, []Severity{SeverityCritical, SeverityWarning, SeverityInfo}, s.Severity)
		require.Len(t, s.Fingerprint, 64)
		_, err := hex.DecodeString(s.Fingerprint)
		require.NoError(t, err)
		require.Equal(t, strings.ToLower(s.Fingerprint), s.Fingerprint)
		require.Equal(t, fp.Fingerprint(s), s.Fingerprint, "the fingerprint can be recomputed")
		require.NotEmpty(t, s.ID)

		enc, err := json.Marshal(s)
		require.NoError(t, err)
		var back Signal
		require.NoError(t, json.Unmarshal(enc, &back))
		assert.Equal(t, *s, back, "encoding/json round trip")

		enc, err = Encode(s)
		require.NoError(t, err)
		var back2 Signal
		require.NoError(t, Decode(enc, &back2))
		assert.Equal(t, *s, back2, "Encode/Decode round trip")
	}
}
