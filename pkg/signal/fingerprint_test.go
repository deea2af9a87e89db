package signal

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFingerprinter_canonicalEncoding pins the encoding itself: a change
// would split every open incident in two across a rolling upgrade.
func TestFingerprinter_canonicalEncoding(t *testing.T) {
	s := Signal{
		Name:      "KubePodCrashLooping",
		Namespace: "payments",
		Target:    Target{Kind: "Pod", Name: "payments-api-7d9c8b6f5-x2k4q", Namespace: "payments"},
		Labels:    map[string]string{"cluster": "prod-eu-1", "severity": "warning"},
	}
	var enc []byte
	for _, kv := range [][2]string{
		{"cluster", "prod-eu-1"}, {"name", "KubePodCrashLooping"}, {"namespace", "payments"},
		{"target.kind", "Pod"}, {"target.name", "payments-api-7d9c8b6f5-x2k4q"},
	} {
		for _, part := range kv {
			enc = append(enc, byte(len(part))) // uvarint of a length < 128
			enc = append(enc, part...)
		}
	}
	sum := sha256.Sum256(enc)
	assert.Equal(t, hex.EncodeToString(sum[:]), MustFingerprinter(DefaultFingerprintFields).Fingerprint(&s))
}

func TestFingerprinter_fields(t *testing.T) {
	s := Signal{Source: SourceAlertmanager, Name: "X", Namespace: "ns", Labels: map[string]string{"cluster": "c", "team": "a"}}
	def := MustFingerprinter(DefaultFingerprintFields)
	byTeam := MustFingerprinter([]string{FieldName, "team"})
	withSource := MustFingerprinter(append([]string{FieldSource}, DefaultFingerprintFields...))

	other := s
	other.Labels = map[string]string{"cluster": "c", "team": "b"}
	assert.Equal(t, def.Fingerprint(&s), def.Fingerprint(&other), "team is not a default field")
	assert.NotEqual(t, byTeam.Fingerprint(&s), byTeam.Fingerprint(&other))

	ev := s
	ev.Source = SourceKubernetesEvent
	assert.Equal(t, def.Fingerprint(&s), def.Fingerprint(&ev))
	assert.NotEqual(t, withSource.Fingerprint(&s), withSource.Fingerprint(&ev))

	// Length prefixes keep field boundaries: ("ab","c") != ("a","bc").
	a := Signal{Name: "ab", Namespace: "c"}
	b := Signal{Name: "a", Namespace: "bc"}
	assert.NotEqual(t, def.Fingerprint(&a), def.Fingerprint(&b))

	assert.Equal(t, DefaultFingerprintFields, def.Fields())
}

func TestNewFingerprinter_invalid(t *testing.T) {
	for _, fields := range [][]string{nil, {}, {""}, {"name", "name"}} {
		_, err := NewFingerprinter(fields)
		assert.Error(t, err, "%q", fields)
	}
	assert.Panics(t, func() { MustFingerprinter(nil) })
}

func TestFingerprinter_concurrent(t *testing.T) {
	fp := MustFingerprinter(DefaultFingerprintFields)
	s := Signal{Name: "X", Namespace: "ns", Target: Target{Kind: "Pod", Name: "p"}, Labels: map[string]string{"cluster": "c"}}
	want := fp.Fingerprint(&s)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := fp.Fingerprint(&s); got != want {
					assert.Equal(t, want, got)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Len(t, want, 64)
}
