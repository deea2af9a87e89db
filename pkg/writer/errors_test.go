package writer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/stormweir/stormweir/pkg/bus"
)

// TestClassify_retriesAllButWhatCanNeverSucceed: a 403 (RBAC, quota,
// admission), throttling, 5xx, timeouts and unreachable servers are
// retried under their reason, with the server's Retry-After as the least
// delay; only an object the API server rejects as invalid or malformed is
// dead-lettered.
func TestClassify_retriesAllButWhatCanNeverSucceed(t *testing.T) {
	gr := schema.GroupResource{Group: "stormweir.io", Resource: "remediationrequests"}
	gk := schema.GroupKind{Group: "stormweir.io", Kind: "RemediationRequest"}
	refused := &url.Error{Op: "Post", URL: "https://10.0.0.1:6443/apis", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	cases := map[string]struct {
		err       error
		permanent bool
		// reason is the retry's reason; "" for an unclassified error.
		reason string
		after  time.Duration
	}{
		"RBAC forbids":         {err: apierrors.NewForbidden(gr, "x", errors.New(`User "system:serviceaccount:stormweir:writer" cannot create resource`)), reason: reasonForbidden},
		"quota exceeded":       {err: apierrors.NewForbidden(gr, "x", errors.New("exceeded quota: rr-quota, requested: count/remediationrequests.stormweir.io=1")), reason: reasonForbidden},
		"webhook denies":       {err: apierrors.NewForbidden(gr, "x", errors.New(`admission webhook "policy.example.com" denied the request`)), reason: reasonForbidden},
		"throttled":            {err: apierrors.NewTooManyRequests("the server has received too many requests", 3), reason: reasonThrottled, after: 3 * time.Second},
		"throttled, no delay":  {err: apierrors.NewTooManyRequestsError("too many requests"), reason: reasonThrottled},
		"unavailable":          {err: apierrors.NewServiceUnavailable("etcdserver: leader changed"), reason: reasonServerError},
		"internal error":       {err: apierrors.NewInternalError(errors.New("boom")), reason: reasonServerError},
		"5xx with retry-after": {err: apierrors.NewGenericServerResponse(503, "POST", gr, "x", "upstream connect error", 7, true), reason: reasonServerError, after: 7 * time.Second},
		"server timeout":       {err: apierrors.NewServerTimeout(gr, "create", 2), reason: reasonTimeout, after: 2 * time.Second},
		"gateway timeout":      {err: apierrors.NewTimeoutError("request did not complete within 60s", 0), reason: reasonTimeout},
		"call deadline":        {err: fmt.Errorf("creating remediation request a/b: %w", &url.Error{Op: "Post", URL: "https://api", Err: context.DeadlineExceeded}), reason: reasonTimeout},
		"connection refused":   {err: refused, reason: reasonUnavailable},
		// client-go was still retrying a 429 (a 503) with Retry-After
		// inside the call when writer.request_timeout ended it.
		"deadline while throttled":   {err: &busyError{err: context.DeadlineExceeded, code: 429, retryAfter: 2 * time.Second}, reason: reasonThrottled, after: 2 * time.Second},
		"deadline while unavailable": {err: &busyError{err: context.DeadlineExceeded, code: 503, retryAfter: time.Second}, reason: reasonServerError, after: time.Second},
		"conflict":                   {err: apierrors.NewConflict(gr, "x", errors.New("the object has been modified")), reason: reasonConflict},
		"invalid":                    {err: apierrors.NewInvalid(gk, "x", field.ErrorList{field.TooLong(field.NewPath("metadata", "namespace"), "", 63)}), permanent: true},
		"bad request":                {err: apierrors.NewBadRequest("the object provided is unrecognized"), permanent: true},
		"too large":                  {err: apierrors.NewRequestEntityTooLargeError("limit is 3145728"), permanent: true},
		"shutting down":              {err: fmt.Errorf("waiting for status write: %w", context.Canceled)},
		"already permanent":          {err: bus.Permanent(errors.New("undecodable")), permanent: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := classify(tc.err)
			assert.ErrorIs(t, err, tc.err, "the cause stays reachable")
			assert.Equal(t, tc.permanent, bus.IsPermanent(err), "dead-lettered at once")
			if tc.permanent {
				return
			}
			reason, after := bus.RetryReason(err)
			if tc.reason == "" {
				assert.Equal(t, bus.ReasonError, reason, "unclassified")
				return
			}
			assert.Equal(t, tc.reason, reason)
			assert.Equal(t, tc.after, after, "the server's Retry-After is the least delay")
		})
	}
	assert.NoError(t, classify(nil))
}
