package writer

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/stormweir/stormweir/pkg/bus"
)

// Reasons the writer gives for a retry (stormweir_worker_retries_total's
// reason label); the chart's alerts select on them.
const (
	// reasonForbidden: a 403. RBAC, a ResourceQuota or an admission
	// webhook refused the write; it succeeds once an operator acts, and
	// until then the request is not created, so it alerts on its own.
	reasonForbidden = "forbidden"
	// reasonThrottled: a 429 that client-go's own retries did not get past.
	reasonThrottled = "throttled"
	// reasonServerError: a 5xx answer.
	reasonServerError = "server_error"
	// reasonTimeout: the call outlasted writer.request_timeout, or the
	// server said it timed out.
	reasonTimeout = "timeout"
	// reasonUnavailable: no answer at all (connection refused or reset).
	reasonUnavailable = "unavailable"
	// reasonConflict: the request kept changing under its status write
	// for every re-read the flush allows.
	reasonConflict = "conflict"
)

// classify says what an API error means for the message, where the error
// is seen. Only what no retry can fix is permanent (the message goes to
// the DLQ): an object the API server finds invalid (422) or malformed
// (400, 405, 406, 413, 415). Everything else is retried with backoff for
// as long as the stream keeps the message, under a reason: a 403 (RBAC,
// quota, admission) because an operator can fix it, and a 429, a 5xx, a
// timeout or a refused connection because they pass; the server's
// Retry-After, when it gives one, is the least delay. An error that is
// not the API server's (a canceled context at shutdown) stays
// unclassified.
func classify(err error) error {
	if err == nil || bus.IsPermanent(err) {
		return err
	}
	var after time.Duration
	if s, ok := apierrors.SuggestsClientDelay(err); ok && s > 0 {
		after = time.Duration(s) * time.Second
	}
	var busy *busyError
	switch {
	case errors.As(err, &busy) && busy.code == http.StatusTooManyRequests:
		return bus.RetryAfter(err, busy.retryAfter, reasonThrottled)
	case errors.As(err, &busy):
		return bus.RetryAfter(err, busy.retryAfter, reasonServerError)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err),
		apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err),
		apierrors.IsRequestEntityTooLargeError(err), apierrors.IsUnsupportedMediaType(err):
		return bus.Permanent(err)
	case apierrors.IsForbidden(err):
		return bus.Retry(err, reasonForbidden)
	case apierrors.IsTooManyRequests(err):
		return bus.RetryAfter(err, after, reasonThrottled)
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), isTimeout(err):
		return bus.RetryAfter(err, after, reasonTimeout)
	case apierrors.IsConflict(err):
		return bus.Retry(err, reasonConflict)
	case isServerError(err):
		return bus.RetryAfter(err, after, reasonServerError)
	case isUnreachable(err):
		return bus.Retry(err, reasonUnavailable)
	}
	return err
}

// isTimeout: the call's own deadline (writer.request_timeout) passed, or
// the connection timed out.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isServerError: the API server (or a proxy in front of it) answered 5xx.
func isServerError(err error) bool {
	var st apierrors.APIStatus
	return errors.As(err, &st) && st.Status().Code >= 500
}

// isUnreachable: no answer came: refused, reset or cut connections.
func isUnreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) ||
		utilnet.IsProbableEOF(err) || utilnet.IsHTTP2ConnectionLost(err)
}
