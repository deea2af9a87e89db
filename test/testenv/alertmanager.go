package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// AlertmanagerBinEnv overrides where tests find the Alertmanager binary.
const AlertmanagerBinEnv = "STORMWEIR_ALERTMANAGER_BIN"

// AlertmanagerReceiver is the name of the one receiver StartAlertmanager
// configures; Alertmanager's notification metrics carry it as a label.
const AlertmanagerReceiver = "stormweir"

// AlertmanagerBinary finds the Alertmanager built by hack/alertmanager.sh
// (<repo>/bin/alertmanager/alertmanager) or named by
// $STORMWEIR_ALERTMANAGER_BIN. A missing binary fails the test: the
// end-to-end tests are part of the suite, never skipped.
func AlertmanagerBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(AlertmanagerBinEnv); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() {
			t.Fatalf("$%s=%s is not an Alertmanager binary (%v); run hack/alertmanager.sh", AlertmanagerBinEnv, p, err)
		}
		return p
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("finding the Alertmanager binary: %v; run hack/alertmanager.sh or set $%s", err, AlertmanagerBinEnv)
	}
	p := filepath.Join(root, "bin", "alertmanager", "alertmanager")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Alertmanager binary missing at %s: run hack/alertmanager.sh (make test does) or set $%s", p, AlertmanagerBinEnv)
	}
	return p
}

// RepoRoot walks up from the working directory (a package directory under
// go test) to the main module's go.mod. The tools/ modules have go.mod
// files of their own, so the module line is checked, not just the file.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/stormweir/stormweir\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/stormweir/stormweir above the working directory")
		}
		dir = parent
	}
}

// Alertmanager is a real Prometheus Alertmanager process with one webhook
// receiver, for end-to-end tests that need the real client: its grouping,
// its payload and its retries.
type Alertmanager struct {
	// URL is the API and UI base URL, e.g. http://127.0.0.1:40123.
	URL string
	// Dir holds the configuration, the storage and alertmanager.log.
	Dir string

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// AlertmanagerOption changes the configuration StartAlertmanager writes.
type AlertmanagerOption func(*alertmanagerConfig)

type alertmanagerConfig struct {
	groupBy        []string
	groupWait      time.Duration
	groupInterval  time.Duration
	repeatInterval time.Duration
}

// WithGroupBy sets the route's group_by (default alertname: one webhook
// request carries every alert of a name, as in most deployments). "..."
// groups by every label, one alert a request.
func WithGroupBy(labels ...string) AlertmanagerOption {
	return func(c *alertmanagerConfig) { c.groupBy = labels }
}

// WithGroupTiming sets group_wait, group_interval and repeat_interval.
func WithGroupTiming(wait, interval, repeat time.Duration) AlertmanagerOption {
	return func(c *alertmanagerConfig) { c.groupWait, c.groupInterval, c.repeatInterval = wait, interval, repeat }
}

// StartAlertmanager starts Alertmanager on a free loopback port with a
// webhook receiver posting to webhookURL with bearerToken, every alert of a
// group in one request (max_alerts 0) and resolutions included. Groups
// flush after 1s (group_wait and group_interval) so tests stay short;
// repeats wait an hour, so a test sees each state change once. Clustering is
// off. The process is stopped at cleanup, and its log is printed when the
// test failed.
func StartAlertmanager(t testing.TB, webhookURL, bearerToken string, opts ...AlertmanagerOption) *Alertmanager {
	t.Helper()
	bin := AlertmanagerBinary(t)
	c := alertmanagerConfig{
		groupBy:        []string{"alertname"},
		groupWait:      time.Second,
		groupInterval:  time.Second,
		repeatInterval: time.Hour,
	}
	for _, o := range opts {
		o(&c)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	require.NoError(t, os.WriteFile(cfgPath, alertmanagerYAML(c, webhookURL, bearerToken), 0o600), "writing alertmanager.yml")
	storage := filepath.Join(dir, "data")
	require.NoError(t, os.Mkdir(storage, 0o700))

	addr := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	logPath := filepath.Join(dir, "alertmanager.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err, "creating alertmanager.log")
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.path="+storage,
		"--web.listen-address="+addr,
		// Otherwise derived from the hostname; webhooks carry it as
		// externalURL.
		"--web.external-url=http://"+addr,
		"--cluster.listen-address=",
		"--log.level=debug",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start(), "starting %s", bin)
	am := &Alertmanager{URL: "http://" + addr, Dir: dir, t: t, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(am.done)
	}()
	t.Cleanup(func() {
		am.stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("alertmanager log (%s):\n%s", logPath, b)
		}
	})
	am.waitReady(15 * time.Second)
	return am
}

func alertmanagerYAML(c alertmanagerConfig, webhookURL, token string) []byte {
	// JSON strings are valid YAML scalars, so values need no escaping rules
	// of their own.
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	groupBy := make([]string, len(c.groupBy))
	for i, l := range c.groupBy {
		groupBy[i] = q(l)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "route:\n")
	fmt.Fprintf(&b, "  receiver: %s\n", q(AlertmanagerReceiver))
	fmt.Fprintf(&b, "  group_by: [%s]\n", strings.Join(groupBy, ", "))
	fmt.Fprintf(&b, "  group_wait: %s\n", model.Duration(c.groupWait))
	fmt.Fprintf(&b, "  group_interval: %s\n", model.Duration(c.groupInterval))
	fmt.Fprintf(&b, "  repeat_interval: %s\n", model.Duration(c.repeatInterval))
	fmt.Fprintf(&b, "receivers:\n")
	fmt.Fprintf(&b, "  - name: %s\n", q(AlertmanagerReceiver))
	fmt.Fprintf(&b, "    webhook_configs:\n")
	fmt.Fprintf(&b, "      - url: %s\n", q(webhookURL))
	fmt.Fprintf(&b, "        send_resolved: true\n")
	fmt.Fprintf(&b, "        max_alerts: 0\n")
	fmt.Fprintf(&b, "        http_config:\n")
	fmt.Fprintf(&b, "          authorization:\n")
	fmt.Fprintf(&b, "            type: Bearer\n")
	fmt.Fprintf(&b, "            credentials: %s\n", q(token))
	return []byte(b.String())
}

func (am *Alertmanager) waitReady(timeout time.Duration) {
	am.t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-am.done:
			am.t.Fatalf("alertmanager exited during start-up; log:\n%s", am.log())
		default:
		}
		resp, err := client.Get(am.URL + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			am.t.Fatalf("alertmanager at %s not ready within %s (last: %v); log:\n%s", am.URL, timeout, err, am.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (am *Alertmanager) log() string {
	b, _ := os.ReadFile(filepath.Join(am.Dir, "alertmanager.log"))
	return string(b)
}

// stop asks Alertmanager to shut down (SIGTERM) and kills it if it has not
// within 5s.
func (am *Alertmanager) stop() {
	select {
	case <-am.done:
		return
	default:
	}
	_ = am.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-am.done:
	case <-time.After(5 * time.Second):
		_ = am.cmd.Process.Kill()
		<-am.done
	}
}

// Alert is a postable alert of Alertmanager's API v2.
type Alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// StartsAt defaults to the time Alertmanager receives the alert.
	StartsAt time.Time `json:"startsAt,omitzero"`
	// EndsAt in the past resolves the alert; zero lets Alertmanager set
	// its resolve_timeout.
	EndsAt       time.Time `json:"endsAt,omitzero"`
	GeneratorURL string    `json:"generatorURL,omitempty"`
}

// PostAlerts sends alerts through POST /api/v2/alerts, as Prometheus does.
func (am *Alertmanager) PostAlerts(t testing.TB, alerts []Alert) {
	t.Helper()
	body, err := json.Marshal(alerts)
	require.NoError(t, err, "encoding alerts")
	resp, err := http.Post(am.URL+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	require.NoError(t, err, "posting %d alerts to alertmanager", len(alerts))
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "posting %d alerts to alertmanager: %s", len(alerts), b)
}

// Resolve posts alerts again with EndsAt set to at (which should be in the
// past), as Prometheus does when a rule stops firing; Alertmanager then
// notifies their resolution at the group's next flush.
func (am *Alertmanager) Resolve(t testing.TB, alerts []Alert, at time.Time) {
	t.Helper()
	resolved := make([]Alert, len(alerts))
	for i, a := range alerts {
		a.EndsAt = at
		resolved[i] = a
	}
	am.PostAlerts(t, resolved)
}

// Metric returns the sum of Alertmanager's series of metric name whose
// labels include labels (0 when none exists yet).
func (am *Alertmanager) Metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	return MetricValue(t, am.URL+"/metrics", name, labels)
}

// MetricValue scrapes a Prometheus text endpoint and returns the sum of the
// counter, gauge or untyped series of metric name whose labels include
// labels (0 when none exists yet).
func MetricValue(t testing.TB, url, name string, labels map[string]string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	// Ask for the text format: the parser below reads nothing else.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "scraping %s", url)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "scraping %s", url)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bufio.NewReader(resp.Body))
	require.NoError(t, err, "parsing metrics from %s", url)
	mf, ok := families[name]
	if !ok {
		return 0
	}
	var sum float64
series:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}
