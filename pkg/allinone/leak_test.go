package allinone_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// The all-in-one process (embedded nats-server, receiver, deduper,
// aggregator and printer), having turned a webhook into a request, leaves
// no goroutine behind once Run returned.
func TestRun_leavesNoGoroutine(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	r := startRun(t)
	require.Equal(t, http.StatusAccepted, r.postExample(t))
	r.waitPrinted(t, "kind: RemediationRequest")
	require.NoError(t, r.stop(t))
	goleak.VerifyNone(t, ignore)
}
