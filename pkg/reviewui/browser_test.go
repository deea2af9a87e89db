package reviewui_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stormweir/stormweir/pkg/clock"
	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/incident"
	"github.com/stormweir/stormweir/pkg/review"
	"github.com/stormweir/stormweir/pkg/review/reviewtest"
	"github.com/stormweir/stormweir/pkg/reviewui"
	"github.com/stormweir/stormweir/pkg/token"
)

// shared is the package's recording: the review's scenario (a new
// incident, a flap, a storm and a rejected alert) from a real pipeline
// in-process, recorded by the first test that needs it.
var shared reviewtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	os.Exit(code)
}

// chromium finds Debian's headless-capable Chromium (hack/test-deps.sh
// installs it); $STORMWEIR_CHROMIUM names another binary.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("STORMWEIR_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: the review UI is tested in a real browser.\n" +
		"\tapt-get install -y chromium (hack/test-deps.sh does), or set STORMWEIR_CHROMIUM to a Chromium binary")
	return ""
}

// artifacts is where the screenshots go: $STORMWEIR_TEST_ARTIFACTS, or a
// directory of the test's own, logged.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("STORMWEIR_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	t.Logf("screenshots in %s", dir)
	return dir
}

// browser starts a headless Chromium for the test. The flags keep it off
// the network: without the background-networking ones it dials Google's
// services at start, which a closed network refuses.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1280, 900),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(cancelTab)
	require.NoError(t, chromedp.Do(ctx), "starting %s", chromium(t))
	return ctx
}

// shoot writes a screenshot of the whole page to dir/name.
func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
}

// stepTimeout bounds one step, so a page that never shows what a step
// waits for fails the step, not the whole browser's budget.
const stepTimeout = 15 * time.Second

// do runs steps in the browser.
func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// eval is the value of a JavaScript expression on the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// text is the visible text of the first element css selects.
func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	require.NoError(t, err, css)
	return v
}

// count is how many elements css selects.
func count(t *testing.T, ctx context.Context, css string) int {
	t.Helper()
	return eval[int](t, ctx, "document.querySelectorAll("+strconv.Quote(css)+").length")
}

// TestBrowser_reviewPages drives the pages in Chromium over the recorded
// scenario and checks them against the engine's own answers.
func TestBrowser_reviewPages(t *testing.T) {
	rec := shared.Scenario(t)
	ctx := browser(t)
	shots := artifacts(t)

	tokens, err := token.New(config.Auth{Tokens: []string{testToken}}, clock.Real{})
	require.NoError(t, err)
	ui, err := reviewui.New(reviewui.Options{JS: rec.JS, Config: rec.Cfg, Tokens: tokens})
	require.NoError(t, err)
	srv := httptest.NewServer(ui)
	t.Cleanup(srv.Close)

	// What the engine says was recorded.
	all, err := review.Read(context.Background(), rec.JS, rec.Cfg.Bus.Prefix, review.Selector{}, nil)
	require.NoError(t, err)
	var storm *review.Timeline
	var crash, flap string
	var ids []string
	for _, tl := range all.Timelines {
		ids = append(ids, tl.ID)
		switch {
		case tl.Kind == review.KindStorm:
			storm = tl
		case tl.Name == "KubePodCrashLooping":
			crash = tl.ID
		case tl.Name == "KubeDeploymentReplicasMismatch":
			flap = tl.ID
		}
	}
	require.NotNil(t, storm, "the scenario records a storm")

	t.Run("sign in, then the incidents list", func(t *testing.T) {
		do(t, ctx,
			chromedp.Navigate(srv.URL+"/incidents"),
			chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=token]`), testToken),
			chromedp.Submit(chromedp.CSS(`input[name=token]`)),
			chromedp.WaitVisible(chromedp.CSS(`table.incidents`)),
		)
		listed := eval[[]string](t, ctx, `[...document.querySelectorAll("tr.incident")].map(r => r.dataset.id)`)
		assert.Equal(t, ids, listed, "every timeline the engine read, in its order")
		assert.Contains(t, listed, crash, "the new incident")
		assert.Equal(t, "1", text(t, ctx, `tr[data-id="`+flap+`"] .flaps`), "the flap's count")
		assert.Contains(t, text(t, ctx, `tr[data-id="`+storm.ID+`"]`), "2 members")
		shoot(t, ctx, shots, "incidents.png")
	})

	t.Run("the storm's timeline", func(t *testing.T) {
		decisions := 0
		for i := range storm.Rows {
			if storm.Rows[i].Decision() {
				decisions++
			}
		}
		require.Positive(t, decisions)
		do(t, ctx, chromedp.Navigate(srv.URL+"/incidents/"+storm.ID), chromedp.WaitVisible(chromedp.CSS(`figure.chart`)))
		assert.Equal(t, decisions, count(t, ctx, `svg#timeline g.decision`), "one marker per recorded decision of the storm")
		assert.Equal(t, 1, count(t, ctx, `svg#timeline g.ev-storm-opened`))
		assert.Equal(t, 2, count(t, ctx, `svg#timeline g.member`), "the storm's two members joining")
		assert.Equal(t, len(review.Explain(storm)), count(t, ctx, `#explain li`), "the explanation beside it")
		assert.Equal(t, 2, count(t, ctx, `tr.member-row`))
		shoot(t, ctx, shots, "timeline-storm.png")
		// The top of it in a laptop-sized window, as the README shows it.
		do(t, ctx, chromedp.EmulateViewport(1100, 660))
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(shots, "timeline-storm-window.png"), png, 0o644))
		do(t, ctx, chromedp.EmulateViewport(1280, 900))
	})

	t.Run("the flap's timeline", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(srv.URL+"/incidents/"+flap), chromedp.WaitVisible(chromedp.CSS(`figure.chart`)))
		assert.Equal(t, 1, count(t, ctx, `svg#timeline g.ev-reopened`))
		assert.Equal(t, 1, count(t, ctx, `svg#timeline g.signal.resolved`), "the resolved signal is a tick of its own kind")
		assert.Equal(t, 2, count(t, ctx, `svg#timeline g.signal.firing`))
		shoot(t, ctx, shots, "timeline-flap.png")
	})

	t.Run("what if the storm threshold were 20", func(t *testing.T) {
		cfg := rec.Cfg
		cfg.Aggregator.RateThreshold = 20
		d, err := review.WhatIf(context.Background(), rec.JS, rec.Cfg.Bus.Prefix, review.Selector{}, cfg, []string{"aggregator.rate_threshold=20"}, nil)
		require.NoError(t, err)
		var want []string
		for _, c := range d.Changes {
			require.Equal(t, incident.RouteIndividual, c.Now)
			want = append(want, c.Incident)
		}
		require.NotEmpty(t, want, "a higher threshold changes the storm's members")

		field := chromedp.CSS(`input[name="aggregator.rate_threshold"]`)
		do(t, ctx,
			chromedp.Navigate(srv.URL+"/whatif"),
			chromedp.WaitVisible(field),
			chromedp.SetValue(field, "20"),
			chromedp.Click(chromedp.CSS(`#run`)),
			chromedp.WaitVisible(chromedp.CSS(`#diff`)),
		)
		changed := eval[[]string](t, ctx, `[...document.querySelectorAll("tr.change")].map(r => r.dataset.id)`)
		slices.Sort(want)
		slices.Sort(changed)
		assert.Equal(t, want, changed, "exactly the incidents the engine names")
		assert.Contains(t, text(t, ctx, `#summary`), "aggregator.rate_threshold=20")
		shoot(t, ctx, shots, "whatif.png")

		// Each change links to its incident's timeline.
		do(t, ctx, chromedp.Click(chromedp.CSS(`tr.change a`)), chromedp.WaitVisible(chromedp.CSS(`figure.chart`)))
		assert.Contains(t, text(t, ctx, `h1`), "KubePodNotReady")
	})

	t.Run("now", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(srv.URL+"/now"), chromedp.WaitVisible(chromedp.CSS(`#dlq`)))
		assert.Equal(t, "0", text(t, ctx, `#dlq .value`), "nothing was dead-lettered")
		assert.Equal(t, "0", text(t, ctx, `#storms .value`), "the storm closed")
		assert.Contains(t, text(t, ctx, `table.consumers`), "deduper")
		shoot(t, ctx, shots, "now.png")
	})

	t.Run("a narrow window", func(t *testing.T) {
		do(t, ctx,
			chromedp.EmulateViewport(420, 900),
			chromedp.Navigate(srv.URL+"/incidents/"+storm.ID),
			chromedp.WaitVisible(chromedp.CSS(`figure.chart`)),
		)
		// The page itself does not scroll sideways; wide tables scroll in
		// a box of their own.
		assert.False(t, eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`), "the page fits a narrow window")
		shoot(t, ctx, shots, "timeline-narrow.png")
	})

	t.Run("a bad matcher", func(t *testing.T) {
		do(t, ctx,
			chromedp.EmulateViewport(1280, 900),
			chromedp.Navigate(srv.URL+`/incidents?match=alertname%3D~%22(`),
			chromedp.WaitVisible(chromedp.CSS(`#error`)),
		)
		assert.Contains(t, text(t, ctx, `#error .reason`), `matcher "alertname=~\"("`)
		shoot(t, ctx, shots, "error.png")
	})
}
