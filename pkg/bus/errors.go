package bus

import (
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A handler says what kind of failure it saw where it saw it (the way
// Alertmanager's notifiers decide retryability at the integration): the
// worker loop dead-letters a Permanent error at once and naks any other
// with a delay. Retry and RetryAfter add the reason the retry is counted
// under (stormweir_worker_retries_total) and, for RetryAfter, the least
// delay the failing dependency asked for. An unclassified error is retried
// like a Retry with reason ReasonError.

// Retry reasons used by more than one stage. A stage may use its own
// (the writer's "forbidden", "throttled", ...); keep them few and stable,
// they are metric label values that alerts select on.
const (
	// ReasonError is the reason of an error its handler did not classify.
	ReasonError = "error"
	// ReasonPanic is the reason of a handler that panicked.
	ReasonPanic = "panic"
	// ReasonPublish is the reason of outputs (or a DLQ copy) JetStream
	// did not store.
	ReasonPublish = "publish"
	// ReasonStore is the reason of a stage's state store (Redis) failing
	// a read or write.
	ReasonStore = "store"
)

// permanentError marks a failure that no retry can fix (undecodable or
// invalid input). It is decided where the error is seen.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the worker loop copies the
// message to the stage's DLQ with the reason and terminates it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err: err}
}

// IsPermanent reports whether err, or anything it wraps, was marked
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// retryError marks a failure that a later attempt can get past: a
// dependency down, slow, overloaded, or refusing until an operator acts.
type retryError struct {
	err    error
	reason string
	after  time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// Retry marks err as transient, counted under reason: the worker loop naks
// the message with the stage's retry delay (bus.consumer.retry_delays) and
// it is delivered again for as long as bus.consumer.max_deliver allows
// (by default for as long as the stream keeps it).
func Retry(err error, reason string) error {
	if err == nil {
		return nil
	}
	return &retryError{err: err, reason: reason}
}

// RetryAfter is Retry with the least delay the dependency asked for (an
// API server's Retry-After): the message is not delivered again sooner,
// though the stage's own delay may be longer.
func RetryAfter(err error, after time.Duration, reason string) error {
	if err == nil {
		return nil
	}
	return &retryError{err: err, reason: reason, after: after}
}

// RetryReason returns the reason and least delay of a Retry or RetryAfter
// error (the outermost, when several wrap each other); ReasonError and
// zero for any other error.
func RetryReason(err error) (reason string, after time.Duration) {
	var r *retryError
	if errors.As(err, &r) {
		return r.reason, r.after
	}
	return ReasonError, 0
}

// JetStream error codes of a message refused for room (nats-server's
// JSStreamStoreFailedF, JSAccountResourcesExceededErr,
// JSInsufficientResourcesErr, JSMemoryResourcesExceededErr,
// JSStorageResourcesExceededErr).
const (
	codeStoreFailed        = 10077
	codeAccountResources   = 10002
	codeInsufficient       = 10023
	codeMemoryResources    = 10028
	codeStorageResources   = 10047
	descMaxBytes, descMsgs = "maximum bytes exceeded", "maximum messages exceeded"
)

// IsFull reports whether err is JetStream refusing a message for lack of
// room: a processing stream at its max_bytes or max_msgs (discard new), or
// the server's or the account's store full. Nothing was stored; the
// message can be sent again once the stages behind it catch up or space
// frees.
func IsFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case codeAccountResources, codeInsufficient, codeMemoryResources, codeStorageResources:
		return true
	case codeStoreFailed:
		return strings.Contains(apiErr.Description, descMaxBytes) || strings.Contains(apiErr.Description, descMsgs)
	}
	return false
}
