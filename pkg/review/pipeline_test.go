package review_test

import (
	"os"
	"testing"

	"github.com/stormweir/stormweir/pkg/review/reviewtest"
)

// shared is the package's recording (reviewtest.Scenario): a real
// pipeline in-process, its writer on an API server of the package's own,
// recorded by the first test that needs it and stopped when the package's
// tests end.
var shared reviewtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	os.Exit(code)
}

// scenario is the recording the tests review.
type scenario = reviewtest.Scenario

func recordScenario(t *testing.T) *scenario { return shared.Scenario(t) }
