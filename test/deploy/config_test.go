package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/stormweir/stormweir/test/testenv"
)

// printConfigRenders are the renders whose ConfigMap and environment the
// stage binaries load: all of them.
var printConfigRenders = []string{"helm-default", "helm-dev", "helm-ha", "helm-secured", "kustomize-dev", "kustomize-ha"}

// TestRender_configLoadsInEveryStage runs each stage binary with its
// rendered command line, the rendered config.yaml and the container's
// environment plus --print-config: the binary must accept the
// configuration (unknown keys and invalid values are errors), and every
// STORMWEIR_* variable the container sets must show in the effective
// configuration under its key.
func TestRender_configLoadsInEveryStage(t *testing.T) {
	bins := buildStages(t)
	byName := map[string]*rendering{}
	for _, r := range renders(t) {
		byName[r.spec.name] = r
	}
	for _, name := range printConfigRenders {
		r := byName[name]
		cms := map[string]string{}
		for _, cm := range r.byKind("ConfigMap") {
			if data, ok, _ := unstructured.NestedString(cm.Object, "data", "config.yaml"); ok {
				cms[cm.GetName()] = data
			}
		}
		for stage, p := range r.stagePods(t) {
			where := name + " " + stage
			c := p.spec.Containers[0]
			require.Equal(t, []string{"/usr/local/bin/" + stage, "--config", "/etc/stormweir/config.yaml"}, c.Command, where)

			var cmName string
			for _, v := range p.spec.Volumes {
				if v.ConfigMap != nil {
					cmName = v.ConfigMap.Name
				}
			}
			data, ok := cms[cmName]
			require.True(t, ok, "%s: ConfigMap %q is not in the render", where, cmName)
			cfgPath := filepath.Join(t.TempDir(), "config.yaml")
			require.NoError(t, os.WriteFile(cfgPath, []byte(data), 0o600))

			cmd := exec.Command(bins[stage], "--config", cfgPath, "--print-config")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
			want := map[string]string{}
			for _, e := range c.Env {
				require.Nil(t, e.ValueFrom, "%s: %s comes from %v", where, e.Name, e.ValueFrom)
				cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
				if key, ok := strings.CutPrefix(e.Name, "STORMWEIR_"); ok {
					want[key] = e.Value
				}
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			require.NoError(t, cmd.Run(), "%s --print-config: %s", where, stderr.String())

			var printed map[string]any
			require.NoError(t, yaml.Unmarshal(stdout.Bytes(), &printed), where)
			flat := map[string]string{}
			flatten("", printed, flat)
			for key, val := range want {
				got, ok := flat[key]
				if assert.True(t, ok, "%s: STORMWEIR_%s names no configuration key", where, key) {
					assert.Equal(t, val, got, "%s: STORMWEIR_%s", where, key)
				}
			}
			var fromMap map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(data), &fromMap))
			assert.Equal(t, dig(fromMap, "bus", "url"), dig(printed, "bus", "url"), "%s: bus.url from the ConfigMap", where)
			if stage == "receiver" {
				assert.Equal(t, "/etc/stormweir/webhook/tokens", dig(printed, "receiver", "auth", "token_file"), where)
			}
			switch name {
			case "helm-ha", "kustomize-ha":
				assert.Equal(t, stage, dig(printed, "bus", "auth", "user"), "%s: its own NATS user", where)
				assert.Equal(t, "/etc/stormweir/nats/password", dig(printed, "bus", "auth", "password_file"), where)
			case "helm-secured":
				assert.Equal(t, "/etc/stormweir/nats/creds", dig(printed, "bus", "auth", "creds_file"), where)
				assert.Equal(t, "/etc/stormweir/nats-tls/tls.crt", dig(printed, "bus", "tls", "cert_file"), where)
				if stage != "receiver" {
					assert.Equal(t, true, dig(printed, "redis", "tls", "enabled"), where)
				}
			}
			if len(secretVolumes[name]) > 1 {
				assert.Equal(t, stage == "writer", dig(printed, "bus", "manage_streams"), "%s: only the writer manages the streams", where)
				want := ""
				if stage != "receiver" {
					want = "/etc/stormweir/redis/password"
				}
				assert.Equal(t, want, dig(printed, "redis", "password_file"), where)
			}
			if strings.HasSuffix(name, "-ha") || name == "helm-secured" {
				assert.Equal(t, 3, dig(printed, "bus", "signals", "replicas"), "%s: R3 streams on the NATS cluster", where)
				assert.Equal(t, "sentinel", dig(printed, "redis", "mode"), where)
			} else {
				assert.Equal(t, 1, dig(printed, "bus", "signals", "replicas"), "%s: R1 streams on one NATS server", where)
			}
		}
	}
}

// buildStages builds the four stage binaries once for the test.
func buildStages(t *testing.T) map[string]string {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	dir := t.TempDir()
	stages := []string{"receiver", "deduper", "aggregator", "writer"}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, s := range stages {
		args = append(args, "./cmd/"+s)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the stages: %s", out)
	bins := map[string]string{}
	for _, s := range stages {
		bins[s] = filepath.Join(dir, s)
	}
	return bins
}

// flatten maps a printed configuration to KEY_PATH → value in the
// environment's spelling (bus.auth.creds_file → BUS_AUTH_CREDS_FILE);
// lists become comma-separated, as the environment gives them.
func flatten(prefix string, v any, into map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := strings.ToUpper(k)
			if prefix != "" {
				p = prefix + "_" + p
			}
			flatten(p, x[k], into)
		}
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		into[prefix] = strings.Join(parts, ",")
	default:
		into[prefix] = fmt.Sprint(x)
	}
}

// dig returns the value at a path of map keys, nil when absent.
func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}
