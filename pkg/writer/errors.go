package writer

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/stormweir/stormweir/pkg/bus"
)

// classify marks an API error that no retry can fix as permanent: the
// object is invalid (422), forbidden (403) or malformed (400, 405, 406,
// 413, 415). Everything else — 5xx, 429, timeouts, refused connections, a
// conflict or a not-found that a fresher cache resolves — stays transient
// and the message is Nak'ed with backoff.
func classify(err error) error {
	if err == nil || bus.IsPermanent(err) {
		return err
	}
	switch {
	case apierrors.IsInvalid(err), apierrors.IsForbidden(err), apierrors.IsBadRequest(err),
		apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err),
		apierrors.IsRequestEntityTooLargeError(err), apierrors.IsUnsupportedMediaType(err):
		return bus.Permanent(err)
	}
	return err
}
