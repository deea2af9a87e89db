package incident

import (
	json "github.com/goccy/go-json"
)

// The inter-stage events are JSON on the bus. Every stage encodes and
// decodes them here, with the same library the signal codec chose by
// benchmark (see pkg/signal/codec.go): decoding storm events with
// encoding/json was two thirds of the writer's CPU under a storm.

// Marshal encodes an Event or a Storm (or any value) for publishing.
func Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes an Event or a Storm published with Marshal.
func Unmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
