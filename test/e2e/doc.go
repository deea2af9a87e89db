// Package e2e holds stormweir's end-to-end tests: real clients (the real
// Prometheus Alertmanager, built by hack/alertmanager.sh) against real
// stages on a real JetStream. The tests read as timelines: what is sent at
// t=0 and what must have arrived, and where, within a few seconds.
package e2e
