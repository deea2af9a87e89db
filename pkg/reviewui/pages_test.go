package reviewui_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/review/reviewtest"
	"github.com/stormweir/stormweir/pkg/reviewui"
	"github.com/stormweir/stormweir/pkg/token"
	"github.com/stormweir/stormweir/test/testenv"
)

const testToken = "s3cret-review-token"

// filled is a UI over streams holding 40 signals of 4 incidents
// (reviewtest.Fill), behind the test token.
type filled struct {
	srv  *httptest.Server
	nats *testenv.NATS
	nc   *nats.Conn
	cfg  config.Config
}

func startFilled(t *testing.T, auth bool) *filled {
	t.Helper()
	nt := testenv.StartNATS(t)
	cfg := testenv.Config(nt.URL)
	// The connection gives up at once when the server goes away, so the
	// unreachable test does not wait on reconnects.
	nc, err := nats.Connect(nt.URL, nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = reviewtest.Fill(context.Background(), js, cfg, 40, 4)
	require.NoError(t, err)
	o := reviewui.Options{JS: js, Config: cfg, Log: slog.New(slog.DiscardHandler)}
	if auth {
		o.Tokens, err = token.New(config.Auth{Tokens: []string{testToken}}, clock.Real{})
		require.NoError(t, err)
	}
	ui, err := reviewui.New(o)
	require.NoError(t, err)
	srv := httptest.NewServer(ui)
	t.Cleanup(srv.Close)
	return &filled{srv: srv, nats: nt, nc: nc, cfg: cfg}
}

// get fetches path with the token as a bearer and returns status and body.
func (f *filled) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := f.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestUI_badInputIsAClearPage(t *testing.T) {
	f := startFilled(t, true)
	for _, tc := range []struct {
		name, path string
		status     int
		reason     string
	}{
		{"malformed matcher", "/incidents?match=" + url.QueryEscape(`alertname=~"(`), http.StatusBadRequest, `matcher &#34;alertname=~\&#34;(&#34;: `},
		{"empty range", "/incidents?since=1h&until=2h", http.StatusBadRequest, "empty range: since"},
		{"unreadable time", "/incidents?since=yesterday", http.StatusBadRequest, `since &#34;yesterday&#34;: neither an RFC 3339 time`},
		{"nothing in the range", "/incidents?since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z", http.StatusNotFound, "nothing recorded from 2026-01-01T00:00:00Z to 2026-01-02T00:00:00Z"},
		{"unknown incident", "/incidents/i00000000000000000000", http.StatusNotFound, "no incident, storm or request i00000000000000000000 in the streams"},
		{"unknown page", "/nope", http.StatusNotFound, "no such page: /nope"},
		{"bad what-if setting", "/whatif?run=1&aggregator.rate_threshold=many", http.StatusBadRequest, `aggregator.rate_threshold &#34;many&#34;: not a whole number`},
		{"what-if without a change", "/whatif?run=1", http.StatusBadRequest, "change a setting first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.get(t, tc.path)
			assert.Equal(t, tc.status, status)
			assert.Contains(t, body, tc.reason)
			assert.NotContains(t, body, "goroutine")
		})
	}
}

func TestUI_pagesOfARecording(t *testing.T) {
	f := startFilled(t, true)
	status, body := f.get(t, "/incidents")
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, 4, strings.Count(body, `<tr class="incident kind-incident"`), "the four incidents listed")
	assert.Contains(t, body, "KubePodCrashLooping")

	// Each incident's timeline: ten signals, ten decisions.
	i := strings.Index(body, `data-id="`)
	require.Positive(t, i)
	id := body[i+len(`data-id="`):]
	id = id[:strings.IndexByte(id, '"')]
	status, body = f.get(t, "/incidents/"+id)
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, 10, strings.Count(body, `<g class="signal firing">`))
	assert.Equal(t, 10, strings.Count(body, `<g class="decision `))
	assert.Contains(t, body, "repeated 9 times within the window")

	status, body = f.get(t, "/now")
	require.Equal(t, http.StatusOK, status, body)
	assert.Contains(t, body, `<meta http-equiv="refresh" content="5">`)
	assert.Contains(t, body, "dead letters kept")

	status, body = f.get(t, "/assets/style.css")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, "svg#timeline")
}

func TestUI_natsUnreachable(t *testing.T) {
	f := startFilled(t, false)
	f.nats.Stop()
	require.Eventually(t, func() bool { return !f.nc.IsConnected() }, 10*time.Second, 10*time.Millisecond)
	for _, path := range []string{"/incidents", "/now", "/incidents/i00000000000000000000", "/whatif?run=1&aggregator.rate_threshold=3"} {
		status, body := f.get(t, path)
		assert.Equal(t, http.StatusServiceUnavailable, status, path)
		assert.Contains(t, body, "NATS is unreachable", path)
	}
}

func TestUI_signInWithAReceiverToken(t *testing.T) {
	f := startFilled(t, true)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar}

	// A browser without the cookie is sent to the form, and back after.
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+"/incidents?since=2h", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "/login", resp.Request.URL.Path)
	next := resp.Request.URL.Query().Get("next")
	assert.Equal(t, "/incidents?since=2h", next)

	resp, err = c.PostForm(f.srv.URL+"/login", url.Values{"token": {"wrong"}, "next": {next}})
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	resp, err = c.PostForm(f.srv.URL+"/login", url.Values{"token": {testToken}, "next": {next}})
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "/incidents", resp.Request.URL.Path)
	u, _ := url.Parse(f.srv.URL)
	require.Len(t, jar.Cookies(u), 1)

	// A script without a token gets a 401, not a form.
	resp, err = http.Get(f.srv.URL + "/incidents")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, `Bearer realm="stormweir review"`, resp.Header.Get("WWW-Authenticate"))

	// A redirect target is a path on this server, never another host.
	resp, err = c.PostForm(f.srv.URL+"/login", url.Values{"token": {testToken}, "next": {"//evil.example/"}})
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, f.srv.URL+"/incidents", resp.Request.URL.String())
}
