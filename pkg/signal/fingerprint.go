package signal

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Fingerprint fields that name signal attributes rather than labels.
const (
	FieldName       = "name"
	FieldNamespace  = "namespace"
	FieldTargetKind = "target.kind"
	FieldTargetName = "target.name"
	FieldSource     = "source"
)

// DefaultFingerprintFields is DESIGN §2's fingerprint: cluster label (if
// any), signal name, namespace, target kind, target name.
var DefaultFingerprintFields = []string{"cluster", FieldName, FieldNamespace, FieldTargetKind, FieldTargetName}

// Fingerprinter computes incident fingerprints from a configured field list.
// A field is one of the Field* names above or, otherwise, a label name.
// The encoding is length-prefixed field=value pairs in the configured order,
// so it is stable across replicas, restarts and label order, and no choice
// of values can make two different field tuples collide.
type Fingerprinter struct {
	fields []string
	pool   sync.Pool
}

// NewFingerprinter validates fields and returns a Fingerprinter.
func NewFingerprinter(fields []string) (*Fingerprinter, error) {
	if len(fields) == 0 {
		return nil, fmt.Errorf("fingerprint fields: at least one field is required")
	}
	seen := map[string]bool{}
	for _, f := range fields {
		if f == "" {
			return nil, fmt.Errorf("fingerprint fields: empty field name")
		}
		if seen[f] {
			return nil, fmt.Errorf("fingerprint fields: %q listed twice", f)
		}
		seen[f] = true
	}
	fp := &Fingerprinter{fields: slices.Clone(fields)}
	fp.pool.New = func() any { return &fpState{h: sha256.New(), buf: make([]byte, 0, 256)} }
	return fp, nil
}

// MustFingerprinter is NewFingerprinter for static field lists.
func MustFingerprinter(fields []string) *Fingerprinter {
	f, err := NewFingerprinter(fields)
	if err != nil {
		panic(err)
	}
	return f
}

type fpState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// Fields returns the configured field list.
func (f *Fingerprinter) Fields() []string { return slices.Clone(f.fields) }

// Fingerprint returns the SHA-256 hex fingerprint of s.
func (f *Fingerprinter) Fingerprint(s *Signal) string {
	st := f.pool.Get().(*fpState)
	defer f.pool.Put(st)
	b := st.buf[:0]
	for _, field := range f.fields {
		b = appendLP(b, field)
		b = appendLP(b, f.value(s, field))
	}
	st.buf = b
	st.h.Reset()
	st.h.Write(b)
	return hex.EncodeToString(st.h.Sum(st.sum[:0]))
}

func (f *Fingerprinter) value(s *Signal, field string) string {
	switch field {
	case FieldName:
		return s.Name
	case FieldNamespace:
		return s.Namespace
	case FieldTargetKind:
		return s.Target.Kind
	case FieldTargetName:
		return s.Target.Name
	case FieldSource:
		return string(s.Source)
	}
	return s.Labels[field]
}

// appendLP appends v with a varint length prefix.
func appendLP(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// idKey hashes the parts of a delivery's source identity into a message id.
func idKey(parts ...string) string {
	h := sha256.New()
	var buf []byte
	for _, p := range parts {
		buf = appendLP(buf[:0], p)
		h.Write(buf)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// labelSetHash is a stable hash of a whole label set, used as the alert's
// identity when Alertmanager did not send its own fingerprint.
func labelSetHash(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		parts = append(parts, k, labels[k])
	}
	return idKey(parts...)[:16]
}

// timeKey renders a time for an idempotency key; the zero time is "".
// Seconds and nanoseconds are kept apart because UnixNano overflows outside
// 1678..2262, which would let distinct accepted times share a key.
func timeKey(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.Unix(), 10) + "." + strconv.Itoa(t.Nanosecond())
}
