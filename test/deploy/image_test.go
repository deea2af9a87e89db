package deploy

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/stormweir/stormweir/test/testenv"
)

// TestDockerfile_numericUserAndLabels: the image runs as the numeric user
// the pod specs name (a kubelet refuses runAsNonRoot with a user name it
// cannot verify), stamps the version into the binaries and carries the
// OCI labels.
func TestDockerfile_numericUserAndLabels(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	var user string
	var labels []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			user, labels = "", nil // only the final stage counts
		case strings.HasPrefix(line, "USER "):
			user = strings.TrimSpace(strings.TrimPrefix(line, "USER "))
		case strings.HasPrefix(line, "LABEL "), strings.HasPrefix(line, "org.opencontainers.image."):
			for _, f := range strings.Fields(strings.TrimPrefix(line, "LABEL ")) {
				if k, _, ok := strings.Cut(f, "="); ok {
					labels = append(labels, k)
				}
			}
		}
	}
	assert.Equal(t, "65532:65532", user, "final stage USER")
	for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.created"} {
		assert.Contains(t, labels, l)
	}
	assert.Contains(t, string(b), "github.com/stormweir/stormweir/pkg/version.Version=", "version stamped by -ldflags")
}

// TestCompose_storesAndExposure: Redis runs with a memory bound that fails
// writes instead of evicting incident records and an append-only file
// flushed every second; NATS, which has no authentication there, is not
// published on the host.
func TestCompose_storesAndExposure(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Ports   []string `yaml:"ports"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(b, &compose))
	assert.Empty(t, compose.Services["nats"].Ports, "NATS published without authentication")
	cmd := " " + strings.Join(compose.Services["redis"].Command, " ") + " "
	for _, want := range []string{" --maxmemory ", " --maxmemory-policy noeviction ", " --appendonly yes ", " --appendfsync everysec "} {
		assert.Contains(t, cmd, want, "redis command")
	}
}
