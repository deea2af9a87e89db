package record

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stormweir/stormweir/pkg/signal"
)

// IncidentID derives the id of the incident that the message msgID opens
// for fingerprint: "i" and 20 lowercase hex digits of SHA-256. It is
// deterministic, so a replay of the same stream names the same incidents,
// and it is a valid DNS label, since RemediationRequest names derive from
// it. A message opens at most one incident (its seen mark recognises a
// redelivery), so ids do not repeat within the seen TTL.
func IncidentID(fingerprint, msgID string) string {
	h := sha256.New()
	h.Write([]byte(fingerprint))
	h.Write([]byte{0})
	h.Write([]byte(msgID))
	return "i" + hex.EncodeToString(h.Sum(nil))[:20]
}

// maxFingerprintLen bounds the fingerprint accepted as part of a key; a
// SHA-256 hex fingerprint is 64 characters.
const maxFingerprintLen = 128

// CheckSignal reports why sig cannot be decided on. Such a signal is
// permanently bad: no retry makes it decidable.
func CheckSignal(sig *signal.Head) error {
	fp := sig.Fingerprint
	switch {
	case fp == "":
		return errors.New("signal has no fingerprint")
	case len(fp) > maxFingerprintLen:
		return fmt.Errorf("fingerprint is %d characters, more than %d", len(fp), maxFingerprintLen)
	case strings.ContainsAny(fp, "{}: \t\r\n"):
		// Braces would break the Redis Cluster hash tag, ':' the key layout.
		return fmt.Errorf("fingerprint %q contains a brace, colon or space", fp)
	}
	if sig.Status != signal.StatusFiring && sig.Status != signal.StatusResolved {
		return fmt.Errorf("signal status %q is neither firing nor resolved", sig.Status)
	}
	return nil
}

// ms returns t in whole milliseconds since the epoch: both stores keep
// times at millisecond precision, so they agree to the bit.
func ms(t time.Time) int64 { return t.UnixMilli() }

// fromMS is the inverse of ms; zero stays the zero time.
func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
