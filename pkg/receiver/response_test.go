package receiver

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/signal"
)

func TestResponse_appendJSONWritesWhatEncodingJSONWrites(t *testing.T) {
	for _, r := range []Response{
		{Accepted: 100},
		{Accepted: 1, Duplicates: 1},
		{Accepted: 3, Duplicates: 2, Ignored: 4, Truncated: 7},
		{Ignored: 5},
	} {
		r.Rejected = []signal.Rejection{}
		var want bytes.Buffer
		require.NoError(t, json.NewEncoder(&want).Encode(r))
		assert.Equal(t, want.String(), string(r.appendJSON(nil)))
	}
}
