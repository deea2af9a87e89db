package storm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/signal"
)

// Scope fields that name signal attributes rather than labels.
const (
	// FieldAlertname is the signal name (alertname or event reason).
	FieldAlertname = "alertname"
	// FieldNamespace is the signal's namespace.
	FieldNamespace = "namespace"
)

// Scope names one storm window: the detector and the values of its fields.
type Scope struct {
	// Hash is the SHA-256 hex of the canonical encoding; it is the storm
	// fingerprint.
	Hash string
	// Values are the scope's field values, as the storm CR shows them.
	Values map[string]string
}

// Tag is the Redis hash tag of the scope's keys and the scope part of its
// storm ids: 24 hex digits (96 bits) of the hash.
func (s Scope) Tag() string { return s.Hash[:tagLen] }

const tagLen = 24

// StormID derives the id of the storm that incidentID opens in the scope:
// "s", the scope tag, "-", 12 hex digits. It is deterministic (a
// redelivered opening incident names the same storm), a valid DNS label
// (storm CR names derive from it), and it carries the scope tag so a member
// update finds the storm's keys without a lookup.
func (s Scope) StormID(incidentID string) string {
	h := sha256.Sum256([]byte(s.Hash + "\x00" + incidentID))
	return "s" + s.Tag() + "-" + hex.EncodeToString(h[:])[:12]
}

// tagOf returns the scope tag inside a storm id.
func tagOf(stormID string) (string, error) {
	if len(stormID) < 1+tagLen+2 || stormID[0] != 's' || stormID[1+tagLen] != '-' {
		return "", fmt.Errorf("%q is not a storm id", stormID)
	}
	return stormID[1 : 1+tagLen], nil
}

// Scoper computes the scopes of a signal from the configured fields.
type Scoper struct {
	fields []string
}

// NewScoper returns the Scoper of fields ("alertname", "namespace" or
// label names), as config.Aggregator.Validate accepts them: at least one,
// none empty or repeated.
func NewScoper(fields []string) *Scoper {
	return &Scoper{fields: slices.Clone(fields)}
}

// ClusterWide reports whether the scope is the alertname alone, in which
// case the rate scope already spans every namespace and a pattern storm
// (one alertname over many scopes) cannot occur.
func (s *Scoper) ClusterWide() bool {
	return len(s.fields) == 1 && s.fields[0] == FieldAlertname
}

// Rate returns the rate-storm scope of sig.
func (s *Scoper) Rate(sig *signal.Signal) Scope {
	vals := make(map[string]string, len(s.fields))
	pairs := make([]string, 0, 2*len(s.fields))
	for _, f := range s.fields {
		v := fieldValue(sig, f)
		vals[f] = v
		pairs = append(pairs, f, v)
	}
	return Scope{Hash: hashScope(incident.StormRate, pairs), Values: vals}
}

// Pattern returns the pattern-storm scope of sig: its alertname,
// cluster-wide.
func (s *Scoper) Pattern(sig *signal.Signal) Scope {
	return Scope{
		Hash:   hashScope(incident.StormPattern, []string{FieldAlertname, sig.Name}),
		Values: map[string]string{FieldAlertname: sig.Name},
	}
}

func fieldValue(sig *signal.Signal, field string) string {
	switch field {
	case FieldAlertname:
		return sig.Name
	case FieldNamespace:
		return sig.Namespace
	}
	return sig.Labels[field]
}

// hashScope hashes the detector and length-prefixed field/value pairs, so
// no choice of values makes two scopes collide and a pattern scope never
// equals a rate scope of the same values.
func hashScope(kind incident.StormType, pairs []string) string {
	h := sha256.New()
	var n [4]byte
	for _, p := range append([]string{string(kind)}, pairs...) {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// FormatScope renders scope values for logs: "alertname=X,namespace=Y".
func FormatScope(v map[string]string) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + v[k])
	}
	return b.String()
}
