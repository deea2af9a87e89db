package signal

// This file is the one place the package's JSON library is chosen: every
// decoder calls unmarshal, and the bus stages call Encode and Decode.
// Reasons for rejections come from encoding/json whatever the choice (see
// decodeReason), so swapping the library changes speed, not messages.
//
// Choice: github.com/goccy/go-json v0.12.0, by benchmark (JSON decoding is
// over half of the receiver's CPU, DESIGN §10). Measured 2026-11-26 on the
// 2-core dev machine (go1.26.8 linux/amd64, shared with other builds), one
// test binary per library with this file swapped, 11 interleaved runs of
//
//	go test -run '^$' -bench 'DecodeAlertmanager|DecodeKubernetesEvents|EncodeSignal|DecodeSignal' -benchmem ./pkg/signal/
//
// medians (bodies: 1 alert 1.3 KB, 100 alerts 86 KB; Signal 1.3 KB):
//
//	library                 decode 1 alert   decode 100 alerts    EventList(6)  Encode    Decode
//	                        ns/op  alerts/s  ns/op    alerts/s    ns/op         ns/op     ns/op
//	encoding/json, 2 passes 35208   28k      2380180   42k        53217         4407      13564
//	encoding/json           13250   75k       936991  107k        50434         4434      12774
//	GOEXPERIMENT=jsonv2      8321  120k       591750  169k        26799         4182       6674
//	go-json-experiment v1    8301  120k       585955  171k        28067         4371       6843
//	goccy/go-json v0.12.0    4585  218k       438667  228k        12887         2450       4055
//	bytedance/sonic v1.15.5  6619  151k       466431  214k        23307         2695       5054
//
// "2 passes" is the decoders before the one-pass fast path (raw items, then
// each item). Run to run the spread was wide (the machine is shared): sonic
// won the 100-alert decode and Encode in one series of 5, goccy in the other
// of 6; goccy led everywhere else in both. sonic was not taken anyway: its
// fuzzing found it accepting invalid JSON (an invalid escape in a skipped
// field, kept as a seed in testdata/fuzz), its errors do not name fields, it
// aliases the input unless CopyString is set, and it runs native code only
// on amd64/arm64 before go1.28 (silently encoding/json elsewhere). goccy
// v0.12.0 passes every test and fuzz target here, copies decoded strings out
// of the input like encoding/json, and writes the same JSON as encoding/json
// (TestEncode_roundTrip); v0.10.x lacks omitzero. encoding/json/v2 is kept
// in view: it compiles on go1.26 only with GOEXPERIMENT=jsonv2, and the
// go-json-experiment module (the same code) is about half as fast as goccy.

import (
	"fmt"

	json "github.com/goccy/go-json"
)

// unmarshal decodes JSON for every decoder of this package.
var unmarshal = json.Unmarshal

// marshal encodes a Signal for publishing.
var marshal = json.Marshal

// Encode returns the wire form of s that the receiver publishes and every
// later stage reads back with Decode.
func Encode(s *Signal) ([]byte, error) {
	b, err := marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding signal %s: %w", s.ID, err)
	}
	return b, nil
}

// Decode parses a signal written by Encode into s.
func Decode(b []byte, s *Signal) error {
	if err := unmarshal(b, s); err != nil {
		return fmt.Errorf("decoding signal: %w", err)
	}
	return nil
}
