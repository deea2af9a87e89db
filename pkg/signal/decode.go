package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits bound what a decoder accepts, so nothing downstream (Redis keys, CR
// fields, label values) has to cope with unbounded input. Every field a
// RemediationRequest carries from the signal is bounded here at most as
// tightly as the CRD bounds it, so a signal the receiver accepts can
// always be written (the decoder fuzz targets check each accepted signal
// against the generated CRD).
const (
	MaxNameLen     = 253
	MaxLabels      = 256
	MaxLabelKeyLen = 316 // qualified Kubernetes label key: 253 prefix + "/" + 63 name
	MaxValueLen    = 64 << 10
	// MaxNamespaceLen is the longest Kubernetes namespace name (a DNS-1123
	// label): spec.target.namespace and a storm's namespace hold no more.
	MaxNamespaceLen = 63
	// MaxKindLen bounds a target's kind as spec.target.kind does (a kind
	// is a Go type name; the longest built-in is 30 characters).
	MaxKindLen = 63
)

// ErrInvalidPayload marks a request body that cannot be decoded at all; the
// receiver answers 400 for it.
var ErrInvalidPayload = errors.New("invalid payload")

// Rejection explains why one item of a batch was not accepted.
type Rejection struct {
	// Index is the item's position in the batch.
	Index int `json:"index"`
	// Name is the alert or event name when it could be read.
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

// Batch is the result of decoding one request body.
type Batch struct {
	// Signals are the accepted items, in input order.
	Signals []Signal
	// Indexes holds, for each of Signals, its item's position in the
	// batch, so a signal refused after decoding (too large for the bus)
	// is reported as a Rejection like an invalid item.
	Indexes []int
	// Rejected are the items that were invalid; their siblings are kept.
	Rejected []Rejection
	// Ignored are the items that are valid but never become signals
	// (Kubernetes events of type Normal, Grafana contact point tests),
	// with why, so a review can say what happened to them.
	Ignored []Rejection
	// Truncated is Alertmanager's truncatedAlerts: alerts the sender left
	// out of the batch, a storm hint.
	Truncated int
}

// Decoder turns request bodies into signals.
type Decoder struct {
	fp  *Fingerprinter
	now func() time.Time
}

// NewDecoder returns a Decoder that fingerprints with fp. now is the clock
// for ReceivedAt; nil means time.Now.
func NewDecoder(fp *Fingerprinter, now func() time.Time) *Decoder {
	if now == nil {
		now = time.Now
	}
	return &Decoder{fp: fp, now: now}
}

// finish fills the fields every source derives the same way and validates
// the result. It returns a reason when the signal cannot be represented.
func (d *Decoder) finish(s *Signal, received time.Time) string {
	if s.Name == "" {
		return "missing name (alertname label or event reason)"
	}
	if len(s.Name) > MaxNameLen {
		return fmt.Sprintf("name longer than %d bytes", MaxNameLen)
	}
	if r := checkMap("label", s.Labels); r != "" {
		return r
	}
	if r := checkMap("annotation", s.Annotations); r != "" {
		return r
	}
	for _, t := range []time.Time{s.StartsAt, s.EndsAt, s.EventLastTimestamp} {
		if !t.IsZero() && (t.Year() < 1 || t.Year() > 9999) {
			return "timestamp out of range"
		}
	}
	if len(s.Target.Name) > MaxNameLen {
		return fmt.Sprintf("target %s name %q is longer than %d bytes", s.Target.Kind, clip([]byte(s.Target.Name)), MaxNameLen)
	}
	if len(s.Target.Kind) > MaxKindLen {
		return fmt.Sprintf("target kind %q is longer than %d bytes", clip([]byte(s.Target.Kind)), MaxKindLen)
	}
	// A namespace that is not a DNS-1123 label but fits one's length
	// (Team_Payments.Prod) is accepted: the writer puts its request in
	// writer.fallback_namespace and keeps the original on the request. A
	// longer one cannot: spec.target.namespace holds at most 63
	// characters, and no Kubernetes namespace is longer.
	for _, ns := range [...]string{s.Target.Namespace, s.Namespace} {
		if len(ns) > MaxNamespaceLen {
			return fmt.Sprintf("namespace %q is %d bytes long; a Kubernetes namespace has at most %d characters", clip([]byte(ns)), len(ns), MaxNamespaceLen)
		}
	}
	// An empty map is omitted on the wire and comes back nil; store it as
	// nil so a published signal decodes to exactly what was published.
	if len(s.Labels) == 0 {
		s.Labels = nil
	}
	if len(s.Annotations) == 0 {
		s.Annotations = nil
	}
	s.ReceivedAt = received
	s.Fingerprint = d.fp.Fingerprint(s)
	return ""
}

func checkMap(what string, m map[string]string) string {
	if len(m) > MaxLabels {
		return fmt.Sprintf("more than %d %ss", MaxLabels, what)
	}
	for k, v := range m {
		if k == "" {
			return fmt.Sprintf("empty %s name", what)
		}
		if len(k) > MaxLabelKeyLen {
			return fmt.Sprintf("%s name longer than %d bytes", what, MaxLabelKeyLen)
		}
		if len(v) > MaxValueLen {
			return fmt.Sprintf("%s %q longer than %d bytes", what, k, MaxValueLen)
		}
	}
	return ""
}

// flexTime decodes RFC 3339 times and treats null and "" as the zero time,
// as Kubernetes and Alertmanager both write unset times either way. It also
// reads Go's default time format ("2026-11-29 21:34:52 +0000 UTC"), which
// is what a Go template makes of a time: kubernetes-event-exporter's
// layouts render `{{ .LastTimestamp }}` so.
type flexTime struct{ time.Time }

// goTimeLayout is time.Time.String's layout.
const goTimeLayout = "2006-01-02 15:04:05.999999999 -0700 MST"

func (t *flexTime) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) || bytes.Equal(b, []byte(`""`)) {
		t.Time = time.Time{}
		return nil
	}
	if err := t.Time.UnmarshalJSON(b); err == nil {
		return nil
	}
	if len(b) > 2 && b[0] == '"' && b[len(b)-1] == '"' {
		// time.Time.String appends the monotonic clock reading, if any,
		// after the zone: " m=+0.001".
		v, _, _ := strings.Cut(string(b[1:len(b)-1]), " m=")
		if parsed, err := time.Parse(goTimeLayout, v); err == nil {
			t.Time = parsed
			return nil
		}
	}
	// time's own errors either omit the value or quote the layout; the
	// sender needs the value.
	return fmt.Errorf("time %s is neither RFC 3339 nor Go's time format", clip(b))
}

// clip bounds input quoted back in a reason, which goes into the response,
// cutting at a rune boundary.
func clip(b []byte) string {
	const maxQuoted = 64
	if len(b) <= maxQuoted {
		return string(b)
	}
	n := maxQuoted
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "..."
}

// decodeReason explains why data, found at path in the request ("" for
// the whole body, "alerts[3]" for an item), did not decode into v, a
// pointer to a zero value of the type that failed, in the sender's words:
// "alerts[3]: expected an object, got a string",
// "alerts[0].labels.severity: expected a string, got a number". The reason
// comes from encoding/json, whose type errors name the field, so what a
// sender reads does not depend on the library chosen in codec.go; only the
// error path pays for the second decode. When encoding/json accepts what
// the library refused (the library is stricter), the library's own error
// is the reason.
func decodeReason(path string, data []byte, v any, err error) string {
	if stdErr := json.Unmarshal(data, v); stdErr != nil {
		err = stdErr
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		where := joinPath(path, te.Field)
		reason := fmt.Sprintf("expected %s, got %s", jsonKind(te.Type), jsonValue(te.Value))
		if where == "" {
			return reason
		}
		return where + ": " + reason
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	// A time or count that failed its own parsing already says what it
	// wanted; encoding/json prefixes it with Go type names.
	msg = clip([]byte(strings.TrimPrefix(msg, "json: ")))
	if path != "" {
		msg = path + ": " + msg
	}
	return msg
}

// joinPath appends encoding/json's dotted field path to the item's path.
func joinPath(path, field string) string {
	switch {
	case field == "":
		return path
	case path == "":
		return field
	}
	return path + "." + field
}

// jsonKind names what a Go type is written as in JSON.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeFor[flexTime](), reflect.TypeFor[time.Time]():
		return "a time (RFC 3339)"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Kind() == reflect.Slice {
			return "a JSON value"
		}
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another type"
}

// jsonValue names the JSON value encoding/json found ("string", "number",
// "number 1.5", "object", "array", "bool").
func jsonValue(v string) string {
	kind, rest, _ := strings.Cut(v, " ")
	switch kind {
	case "string":
		return "a string"
	case "number":
		if rest != "" {
			return "the number " + clip([]byte(rest))
		}
		return "a number"
	case "object":
		return "an object"
	case "array":
		return "an array"
	case "bool":
		return "true or false"
	}
	return clip([]byte(v))
}

// rawItems splits a JSON array into its elements without decoding them, so
// each item is decoded (and possibly rejected) on its own.
type rawItems []json.RawMessage
