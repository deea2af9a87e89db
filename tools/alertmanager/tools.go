//go:build tools

// Package tools pins the Prometheus Alertmanager used as a real client in the
// end-to-end tests (test/e2e). Build it with hack/alertmanager.sh (or
// `go build github.com/prometheus/alertmanager/cmd/alertmanager` from this
// directory). It lives in its own module so that Alertmanager's dependency
// versions never fight with the main module's.
//
// The version stays at v0.31.1: the module archives of v0.32 and later lack
// the generated UI assets and do not build.
package tools

import (
	_ "github.com/prometheus/alertmanager/cmd/alertmanager"
)
