package signal

import "fmt"

// Head is the part of a signal that the stages between the receiver and
// the writer act on: its identity, fingerprint, status and target. The
// deduper decides on it and the aggregator counts storm members by it;
// both carry the rest of the signal on as the bytes the receiver encoded.
// Decoding the head alone skips the labels and annotations that make up
// most of a signal's bytes (BenchmarkDecodeHead against
// BenchmarkDecodeSignal), while still checking that the whole input is
// valid JSON.
type Head struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
	Status      Status `json:"status"`
	Target      Target `json:"target"`
	// EventUID and EventCount are a Kubernetes event's identity and its
	// own count of occurrences (zero for other sources): the deduper
	// counts an event's occurrences by them, not by its deliveries.
	EventUID   string `json:"eventUID,omitempty"`
	EventCount int32  `json:"eventCount,omitempty"`
}

// Occurrences returns how many occurrences the signal reports of the
// source object named by the returned key: a Kubernetes event's count of
// its event uid, or zero and "" for a signal that is one occurrence by
// itself (an alert).
func (h *Head) Occurrences() (key string, count int64) {
	if h.EventCount <= 0 || h.EventUID == "" {
		return "", 0
	}
	return h.EventUID, int64(h.EventCount)
}

// Firing reports whether the signal reports an active problem.
func (h *Head) Firing() bool { return h.Status == StatusFiring }

// Head returns s's head.
func (s *Signal) Head() Head {
	return Head{ID: s.ID, Fingerprint: s.Fingerprint, Status: s.Status, Target: s.Target,
		EventUID: s.EventUID, EventCount: s.EventCount}
}

// DecodeHead parses the head of a signal written by Encode into h.
func DecodeHead(b []byte, h *Head) error {
	if err := unmarshal(b, h); err != nil {
		return fmt.Errorf("decoding signal: %w", err)
	}
	return nil
}
