package signal

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"time"
)

// kubeObjectRef is the part of core/v1 ObjectReference an event names.
type kubeObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

type kubeSeries struct {
	Count            flexCount `json:"count"`
	LastObservedTime flexTime  `json:"lastObservedTime"`
}

// kubeEvent covers both core/v1 Event and events.k8s.io/v1 Event: the two
// share metadata, reason and type and differ in the names of the rest.
type kubeEvent struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		UID         string            `json:"uid"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Reason string      `json:"reason"`
	Type   string      `json:"type"`
	Series *kubeSeries `json:"series"`
	// ClusterName is not part of Event: kubernetes-event-exporter adds it
	// to its default webhook body. It becomes the cluster label, so the
	// same event in two clusters is two incidents.
	ClusterName string `json:"clusterName"`
	// EventTime is set by events.k8s.io/v1 writers (MicroTime).
	EventTime flexTime `json:"eventTime"`

	// core/v1 names.
	InvolvedObject *kubeObjectRef  `json:"involvedObject"`
	Message        string          `json:"message"`
	Count          flexCount       `json:"count"`
	FirstTimestamp flexTime        `json:"firstTimestamp"`
	LastTimestamp  flexTime        `json:"lastTimestamp"`
	Source         kubeEventSource `json:"source"`

	// events.k8s.io/v1 names.
	Regarding                *kubeObjectRef  `json:"regarding"`
	Note                     string          `json:"note"`
	DeprecatedCount          flexCount       `json:"deprecatedCount"`
	DeprecatedFirstTimestamp flexTime        `json:"deprecatedFirstTimestamp"`
	DeprecatedLastTimestamp  flexTime        `json:"deprecatedLastTimestamp"`
	DeprecatedSource         kubeEventSource `json:"deprecatedSource"`
	ReportingController      string          `json:"reportingController"`
	ReportingComponent       string          `json:"reportingComponent"`
}

type kubeEventSource struct {
	Component string `json:"component"`
	Host      string `json:"host"`
}

// kubeBody decodes any accepted body object in one pass: a single event
// fills the embedded event, a list fills Items (DESIGN §10: JSON decoding
// dominates the receiver's CPU, so the common case decodes once).
type kubeBody struct {
	kubeEvent
	Items []kubeEvent `json:"items"`
}

// isEventList tells a list body from a single event.
func isEventList(kind string, hasItems bool) bool {
	return hasItems || kind == "EventList" || kind == "List"
}

// kubeList is an EventList (core/v1 or events.k8s.io/v1) or a List.
type kubeList struct {
	Kind  string   `json:"kind"`
	Items rawItems `json:"items"`
}

// DecodeKubernetesEvents decodes a core/v1 Event, an events.k8s.io/v1
// Event, a list of either (EventList, List, or a bare JSON array). Warning
// events become firing signals; Normal events are counted as ignored.
func (d *Decoder) DecodeKubernetesEvents(body []byte) (*Batch, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || (body[0] != '[' && body[0] != '{') {
		return nil, fmt.Errorf("%w: kubernetes event: body is neither a JSON object nor an array", ErrInvalidPayload)
	}
	// One pass for the common case; a body that fails as a whole is split
	// into raw items so each bad event is rejected on its own.
	var events []kubeEvent
	var err error
	if body[0] == '[' {
		err = unmarshal(body, &events)
	} else {
		var k kubeBody
		if err = unmarshal(body, &k); err == nil {
			if isEventList(k.Kind, k.Items != nil) {
				events = k.Items
			} else {
				events = []kubeEvent{k.kubeEvent}
			}
		}
	}
	if err != nil {
		return d.decodeKubernetesEventItems(body)
	}
	received := d.now().UTC()
	b := &Batch{Signals: make([]Signal, 0, len(events)), Indexes: make([]int, 0, len(events))}
	for i := range events {
		d.addEvent(b, i, &events[i], received)
	}
	return b, nil
}

func (d *Decoder) decodeKubernetesEventItems(body []byte) (*Batch, error) {
	var items rawItems
	// where an item is in the body: "[3]" of an array, "items[3]" of an
	// EventList, nothing for a single event.
	where := "[%d]"
	if body[0] == '[' {
		if err := unmarshal(body, &items); err != nil {
			return nil, fmt.Errorf("%w: event list: %s", ErrInvalidPayload, decodeReason("", body, &rawItems{}, err))
		}
	} else {
		var l kubeList
		if err := unmarshal(body, &l); err != nil {
			return nil, fmt.Errorf("%w: kubernetes event: %s", ErrInvalidPayload, decodeReason("", body, &kubeList{}, err))
		}
		if isEventList(l.Kind, l.Items != nil) {
			items, where = l.Items, "items[%d]"
		} else {
			items, where = rawItems{body}, ""
		}
	}
	received := d.now().UTC()
	b := &Batch{Signals: make([]Signal, 0, len(items)), Indexes: make([]int, 0, len(items))}
	for i, raw := range items {
		var e kubeEvent
		if err := unmarshal(raw, &e); err != nil {
			path := ""
			if where != "" {
				path = fmt.Sprintf(where, i)
			}
			b.Rejected = append(b.Rejected, Rejection{Index: i, Reason: decodeReason(path, raw, &kubeEvent{}, err)})
			continue
		}
		d.addEvent(b, i, &e, received)
	}
	return b, nil
}

// addEvent appends event i of the batch as a signal, a rejection or an
// ignored Normal event.
func (d *Decoder) addEvent(b *Batch, i int, e *kubeEvent, received time.Time) {
	switch e.Type {
	case "Normal":
		b.Ignored = append(b.Ignored, Rejection{Index: i, Name: e.Reason, Reason: normalReason(e)})
		return
	case "Warning":
	default:
		b.Rejected = append(b.Rejected, Rejection{Index: i, Name: e.Reason, Reason: fmt.Sprintf("event type %q is neither Warning nor Normal", e.Type)})
		return
	}
	s, reason := eventSignal(e)
	if reason == "" {
		reason = d.finish(&s, received)
	}
	if reason != "" {
		b.Rejected = append(b.Rejected, Rejection{Index: i, Name: e.Reason, Reason: reason})
		return
	}
	b.Signals = append(b.Signals, s)
	b.Indexes = append(b.Indexes, i)
}

// normalReason says why a Normal event is not a signal, naming the object
// it is about when the event does.
func normalReason(e *kubeEvent) string {
	const why = "a Normal event is informational; only Warning events become signals"
	o := e.InvolvedObject
	if e.Regarding != nil {
		o = e.Regarding
	}
	if o == nil || o.Name == "" {
		return why
	}
	obj := o.Kind + " " + o.Name
	if o.Namespace != "" {
		obj = o.Kind + " " + o.Namespace + "/" + o.Name
	}
	return why + " (" + obj + ")"
}

func eventSignal(e *kubeEvent) (Signal, string) {
	if e.Kind != "" && e.Kind != "Event" {
		return Signal{}, fmt.Sprintf("kind %q is not Event", e.Kind)
	}
	ref, message, source := e.InvolvedObject, e.Message, e.Source
	count, firstSeen, last := int32(e.Count), e.FirstTimestamp.Time, e.LastTimestamp.Time
	if e.Regarding != nil || e.APIVersion == "events.k8s.io/v1" {
		ref, message, source = e.Regarding, e.Note, e.DeprecatedSource
		count, firstSeen, last = int32(e.DeprecatedCount), e.DeprecatedFirstTimestamp.Time, e.DeprecatedLastTimestamp.Time
	}
	if ref == nil || ref.Kind == "" || ref.Name == "" {
		return Signal{}, "event names no involved object (kind and name)"
	}
	if e.Series != nil {
		count = max(count, int32(e.Series.Count))
		if e.Series.LastObservedTime.After(last) {
			last = e.Series.LastObservedTime.Time
		}
	}
	count = max(count, 1)
	starts := firstSeen
	if starts.IsZero() {
		starts = e.EventTime.Time
	}
	if last.IsZero() {
		last = starts
	}
	ns := ref.Namespace
	if ns == "" {
		ns = e.Metadata.Namespace
	}
	target := Target{Kind: ref.Kind, Name: ref.Name, Namespace: ref.Namespace}
	labels := make(map[string]string, len(e.Metadata.Labels)+4)
	for k, v := range e.Metadata.Labels {
		labels[k] = v
	}
	if e.ClusterName != "" && labels["cluster"] == "" {
		labels["cluster"] = e.ClusterName
	}
	labels["reason"] = e.Reason
	if c := firstNonEmpty(e.ReportingController, e.ReportingComponent, source.Component); c != "" {
		labels["reporting_component"] = c
	}
	if source.Host != "" {
		labels["host"] = source.Host
	}
	annotations := make(map[string]string, len(e.Metadata.Annotations)+1)
	for k, v := range e.Metadata.Annotations {
		annotations[k] = v
	}
	if message != "" {
		annotations["message"] = message
	}
	uid := e.Metadata.UID
	if uid == "" {
		uid = e.Metadata.Namespace + "/" + e.Metadata.Name
	}
	if uid == "/" {
		return Signal{}, "event has neither metadata.uid nor metadata.name"
	}
	s := Signal{
		Source:             SourceKubernetesEvent,
		Name:               e.Reason,
		Status:             StatusFiring,
		Severity:           SeverityWarning,
		Namespace:          ns,
		Target:             target,
		Labels:             labels,
		Annotations:        annotations,
		StartsAt:           starts.UTC(),
		EventCount:         count,
		EventLastTimestamp: last.UTC(),
		EventUID:           uid,
	}
	s.ID = idKey(string(SourceKubernetesEvent), uid, strconv.FormatInt(int64(count), 10), timeKey(s.EventLastTimestamp))
	return s, ""
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// flexCount is an event count written as a JSON number or, by senders that
// template every value into a string (kubernetes-event-exporter's layout
// renders `count: "{{ .Count }}"` as "5"), as a string of digits. null and
// "" are an unset count.
type flexCount int32

func (c *flexCount) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	v := b
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		if len(v) == 0 {
			*c = 0
			return nil
		}
	}
	// Parsed by hand: strconv would need a string, an allocation per
	// event on the receiver's hottest path.
	neg := len(v) > 1 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	var n int64
	for i, d := range v {
		if d < '0' || d > '9' || n > math.MaxInt32 || i >= 11 {
			n = math.MaxInt64
			break
		}
		n = n*10 + int64(d-'0')
	}
	if len(v) == 0 || n > math.MaxInt32 {
		return fmt.Errorf("count %s is not a whole number up to %d", clip(b), math.MaxInt32)
	}
	if neg {
		n = -n
	}
	*c = flexCount(n)
	return nil
}
