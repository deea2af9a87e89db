package receiver_test

import (
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/stormweir/stormweir/pkg/receiver"
)

// readmeYAML returns the README's YAML block that contains marker.
func readmeYAML(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("README.md has no YAML block containing %q", marker)
	return ""
}

// TestREADME_eventExporterConfig keeps the README's kubernetes-event-exporter
// configuration in step with the receiver: the path it posts to, and a
// header the receiver accepts.
func TestREADME_eventExporterConfig(t *testing.T) {
	var cfg struct {
		ClusterName string `yaml:"clusterName"`
		Receivers   []struct {
			Name    string `yaml:"name"`
			Webhook struct {
				Endpoint string            `yaml:"endpoint"`
				Headers  map[string]string `yaml:"headers"`
				Layout   map[string]any    `yaml:"layout"`
			} `yaml:"webhook"`
		} `yaml:"receivers"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readmeYAML(t, "kubernetes-event-exporter's config.yaml")), &cfg))
	assert.NotEmpty(t, cfg.ClusterName)
	require.Len(t, cfg.Receivers, 1)
	wh := cfg.Receivers[0].Webhook
	u, err := url.Parse(wh.Endpoint)
	require.NoError(t, err)
	assert.Equal(t, receiver.PathKubernetesEvent, u.Path)
	assert.Regexp(t, `^Bearer \S+$`, wh.Headers["Authorization"])
	assert.Nil(t, wh.Layout, "the default body, which the fixtures are")
}

// TestREADME_grafanaContactPoint keeps the README's Grafana provisioning
// in step with the receiver.
func TestREADME_grafanaContactPoint(t *testing.T) {
	var cfg struct {
		ContactPoints []struct {
			Receivers []struct {
				Type     string         `yaml:"type"`
				Settings map[string]any `yaml:"settings"`
			} `yaml:"receivers"`
		} `yaml:"contactPoints"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readmeYAML(t, "provisioning/alerting/stormweir.yaml")), &cfg))
	require.Len(t, cfg.ContactPoints, 1)
	require.Len(t, cfg.ContactPoints[0].Receivers, 1)
	r := cfg.ContactPoints[0].Receivers[0]
	assert.Equal(t, "webhook", r.Type)
	u, err := url.Parse(r.Settings["url"].(string))
	require.NoError(t, err)
	assert.Equal(t, receiver.PathGrafana, u.Path)
	assert.Equal(t, "Bearer", r.Settings["authorization_scheme"])
	assert.NotContains(t, r.Settings, "payload", "a custom payload replaces the one the receiver reads")
}
