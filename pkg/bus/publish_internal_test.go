package bus

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAck_readsEveryReplyShape(t *testing.T) {
	for _, tc := range []struct {
		data string
		dup  bool
	}{
		{`{"stream":"S","seq":12}`, false},
		{`{"stream":"S","seq":12,"duplicate": true}`, true},
		{`{"stream":"S","seq":12,"duplicate":true}`, true},
		{`{"stream":"S","domain":"hub","seq":3}`, false},
		{`{"seq":3,"stream":"S","duplicate":true}`, true}, // another field order: decoded in full
	} {
		dup, err := parseAck(&nats.Msg{Data: []byte(tc.data)})
		require.NoError(t, err, tc.data)
		assert.Equal(t, tc.dup, dup, tc.data)
	}

	_, err := parseAck(&nats.Msg{Data: []byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}`)})
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 503, apiErr.Code)

	_, err = parseAck(&nats.Msg{Header: nats.Header{"Status": []string{"503"}}})
	assert.ErrorIs(t, err, jetstream.ErrNoStreamResponse)

	_, err = parseAck(&nats.Msg{Data: []byte(`{"seq":1}`)})
	assert.ErrorIs(t, err, jetstream.ErrInvalidJSAck)
	_, err = parseAck(&nats.Msg{Data: []byte(`not json`)})
	assert.ErrorIs(t, err, jetstream.ErrInvalidJSAck)
}
