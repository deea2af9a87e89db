// Package testenv starts the real components stormweir's tests run
// against: an in-process JetStream server, the machine's Redis (isolated
// by key prefix), and redis-server processes of a test's own for tests that
// stop, restart or cluster Redis. Local services come first; a contributor
// without them but with Docker gets testcontainers as a fallback. In CI a
// missing service is a failure, never a skip.
package testenv
