package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/stormweir/stormweir/test/testenv"
)

// TestHelm_lint runs helm lint --strict with each values file.
func TestHelm_lint(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	bin, err := tool(root, helmBinEnv, "helm", "helm")
	require.NoError(t, err)
	for _, values := range [][]string{nil, {"-f", "values-dev.yaml"}, {"-f", "values-ha.yaml"}} {
		cmd := exec.Command(bin, append([]string{"lint", ".", "--strict"}, values...)...)
		cmd.Dir = filepath.Join(root, "deploy", "helm", "stormweir")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "helm lint %v:\n%s", values, out)
		assert.Contains(t, string(out), "1 chart(s) linted, 0 chart(s) failed")
	}
}

// TestRender_golden compares every render with its golden file under
// testdata/golden; -update rewrites them.
func TestRender_golden(t *testing.T) {
	for _, r := range renders(t) {
		path := filepath.Join("testdata", "golden", r.spec.name+".yaml")
		if *update {
			require.NoError(t, os.WriteFile(path, r.yaml, 0o644))
			continue
		}
		want, err := os.ReadFile(path)
		require.NoError(t, err, "no golden render for %s: run go test ./test/deploy -run TestRender_golden -update", r.spec.name)
		if !bytes.Equal(want, r.yaml) {
			t.Errorf("%s differs from %s (go test ./test/deploy -run TestRender_golden -update after a deliberate change):\n%s",
				r.spec.name, path, firstDiff(string(want), string(r.yaml)))
		}
	}
}

// firstDiff shows the first differing line with a little context.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  golden:   " + wl + "\n  rendered: " + gl
		}
	}
	return ""
}

// TestRender_kinds pins what each way of deploying renders.
func TestRender_kinds(t *testing.T) {
	base := map[string]int{"ClusterRole": 1, "ClusterRoleBinding": 1, "ConfigMap": 1, "Deployment": 4, "Service": 1, "ServiceAccount": 2}
	with := func(extra map[string]int) map[string]int {
		m := map[string]int{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	ha := with(map[string]int{
		"ConfigMap": 2, "HorizontalPodAutoscaler": 1, "NetworkPolicy": 5, "PodDisruptionBudget": 4,
		"PodMonitor": 1, "PrometheusRule": 1, "ScaledObject": 3,
	})
	// The dev renders watch events: the receiver's ServiceAccount and the
	// watcher's ClusterRole and binding.
	watcher := map[string]int{"ClusterRole": 2, "ClusterRoleBinding": 2, "ServiceAccount": 3}
	want := map[string]map[string]int{
		"helm-default": with(map[string]int{"PodDisruptionBudget": 4}),
		"helm-dev":     with(watcher),
		"helm-ha":      ha,
		// Token review on: the receiver's ServiceAccount and its role.
		"helm-secured": with(map[string]int{
			"ConfigMap": 2, "HorizontalPodAutoscaler": 1, "NetworkPolicy": 5, "PodDisruptionBudget": 4,
			"PodMonitor": 1, "PrometheusRule": 1, "ScaledObject": 3,
			"ClusterRole": 2, "ClusterRoleBinding": 2, "ServiceAccount": 3,
		}),
		"kustomize-dev": with(map[string]int{
			"CustomResourceDefinition": 1, "Namespace": 1, "Secret": 1, "Service": 3, "StatefulSet": 2,
			"ClusterRole": 2, "ClusterRoleBinding": 2, "ServiceAccount": 3,
		}),
		"kustomize-ha": with(map[string]int{
			"CustomResourceDefinition": 1, "Namespace": 1, "HorizontalPodAutoscaler": 1, "NetworkPolicy": 5,
			"PodDisruptionBudget": 4, "ScaledObject": 3,
			"ClusterRole": 2, "ClusterRoleBinding": 2, "ServiceAccount": 3,
		}),
	}
	for _, r := range renders(t) {
		t.Logf("%-14s %s", r.spec.name, kindList(r.kinds()))
		assert.Equal(t, want[r.spec.name], r.kinds(), r.spec.name)
	}
}

// TestRender_podSpecsAKubeletStarts checks every pod spec (the stages,
// and the dev overlay's NATS and Redis) for what a kubelet or an admission
// policy of the restricted Pod Security Standard refuses: runAsNonRoot
// without a numeric user (the image's user cannot be verified), root,
// privilege, host namespaces or paths, added capabilities, no seccomp
// profile, and containers without requests or a memory limit.
func TestRender_podSpecsAKubeletStarts(t *testing.T) {
	for _, r := range renders(t) {
		for _, p := range r.podTemplates(t) {
			where := r.spec.name + " " + p.owner
			s := p.spec
			assert.False(t, s.HostNetwork || s.HostPID || s.HostIPC, "%s: host namespaces", where)
			for _, v := range s.Volumes {
				assert.Nil(t, v.HostPath, "%s: hostPath volume %s", where, v.Name)
			}
			psc := s.SecurityContext
			require.NotNil(t, psc, "%s: no pod securityContext", where)
			for _, c := range append(append([]corev1.Container{}, s.InitContainers...), s.Containers...) {
				cw := where + " container " + c.Name
				csc := c.SecurityContext
				require.NotNil(t, csc, "%s: no securityContext", cw)

				nonRoot := pick(csc.RunAsNonRoot, psc.RunAsNonRoot)
				user := pick(csc.RunAsUser, psc.RunAsUser)
				assert.True(t, nonRoot != nil && *nonRoot, "%s: runAsNonRoot not set", cw)
				if assert.NotNil(t, user, "%s: runAsNonRoot without a numeric runAsUser: the kubelet cannot verify the image's user", cw) {
					assert.NotZero(t, *user, "%s: runs as root", cw)
				}
				assert.NotNil(t, pick(csc.RunAsGroup, psc.RunAsGroup), "%s: no runAsGroup", cw)
				assert.False(t, csc.Privileged != nil && *csc.Privileged, "%s: privileged", cw)
				assert.True(t, csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation not false", cw)
				assert.True(t, csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem, "%s: root filesystem writable", cw)
				if assert.NotNil(t, csc.Capabilities, "%s: capabilities not dropped", cw) {
					assert.Equal(t, []corev1.Capability{"ALL"}, csc.Capabilities.Drop, "%s: drop ALL", cw)
					assert.Empty(t, csc.Capabilities.Add, "%s: added capabilities", cw)
				}
				seccomp := csc.SeccompProfile
				if seccomp == nil {
					seccomp = psc.SeccompProfile
				}
				assert.True(t, seccomp != nil && seccomp.Type == corev1.SeccompProfileTypeRuntimeDefault, "%s: seccomp not RuntimeDefault", cw)

				res := c.Resources
				assert.False(t, res.Requests.Cpu().IsZero(), "%s: no cpu request", cw)
				assert.False(t, res.Requests.Memory().IsZero(), "%s: no memory request", cw)
				assert.False(t, res.Limits.Memory().IsZero(), "%s: no memory limit", cw)

				image := c.Image
				name := image[strings.LastIndex(image, "/")+1:]
				name, _, _ = strings.Cut(name, "@")
				_, tag, hasTag := strings.Cut(name, ":")
				assert.True(t, hasTag && tag != "" && tag != "latest", "%s: image %q is not pinned by a tag", cw, image)
			}
		}
	}
}

func pick[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

// TestRender_goMemLimitBelowMemoryLimit: every stage's GOMEMLIMIT is set
// and sits at 90% of its memory limit (the chart computes it; the
// kustomize base states it next to the limit).
func TestRender_goMemLimitBelowMemoryLimit(t *testing.T) {
	for _, r := range renders(t) {
		for stage, p := range r.stagePods(t) {
			c := p.spec.Containers[0]
			limit := c.Resources.Limits.Memory().Value()
			v := envValue(c, "GOMEMLIMIT")
			require.NotEmpty(t, v, "%s %s: no GOMEMLIMIT", r.spec.name, stage)
			got, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err, "%s %s: GOMEMLIMIT %q", r.spec.name, stage, v)
			assert.Equal(t, limit*90/100, got, "%s %s: GOMEMLIMIT is 90%% of the %s limit", r.spec.name, stage, resource.NewQuantity(limit, resource.BinarySI))
		}
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// secretVolumes are the secret volumes each render mounts somewhere: the
// webhook tokens always; the ha renders add a NATS user per stage and the
// Redis password; helm-secured adds NATS and Redis TLS.
var secretVolumes = map[string][]string{
	"helm-default":  {"webhook-tokens"},
	"helm-dev":      {"webhook-tokens"},
	"kustomize-dev": {"webhook-tokens"},
	"helm-ha":       {"webhook-tokens", "nats-auth", "redis-auth"},
	"kustomize-ha":  {"webhook-tokens", "nats-auth", "redis-auth"},
	"helm-secured":  {"webhook-tokens", "nats-auth", "nats-tls", "redis-auth", "redis-tls"},
}

// TestRender_secretsOnlyWhereUsed: webhook tokens reach the receiver only,
// the Redis password the stages that use Redis, NATS credentials every
// stage (each its own), and an API token the writer only.
func TestRender_secretsOnlyWhereUsed(t *testing.T) {
	// Secret volume name → stages that must mount it when the render has
	// it (all others must not).
	mounts := map[string][]string{
		"webhook-tokens": {"receiver"},
		"nats-auth":      {"receiver", "deduper", "aggregator", "writer"},
		"nats-tls":       {"receiver", "deduper", "aggregator", "writer"},
		"redis-auth":     {"deduper", "aggregator", "writer"},
		"redis-tls":      {"deduper", "aggregator", "writer"},
	}
	// Environment naming a secret file → the secret volume it lives in.
	envs := map[string]string{
		"STORMWEIR_RECEIVER_AUTH_TOKEN_FILE": "webhook-tokens",
		"STORMWEIR_BUS_AUTH_CREDS_FILE":      "nats-auth",
		"STORMWEIR_BUS_AUTH_PASSWORD_FILE":   "nats-auth",
		"STORMWEIR_BUS_TLS_CA_FILE":          "nats-tls",
		"STORMWEIR_BUS_TLS_CERT_FILE":        "nats-tls",
		"STORMWEIR_BUS_TLS_KEY_FILE":         "nats-tls",
		"STORMWEIR_REDIS_PASSWORD_FILE":      "redis-auth",
		"STORMWEIR_REDIS_TLS_CA_FILE":        "redis-tls",
	}
	for _, r := range renders(t) {
		enabled, ok := secretVolumes[r.spec.name]
		require.True(t, ok, "%s: which secrets does it mount?", r.spec.name)
		natsSecrets := map[string]string{}
		for stage, p := range r.stagePods(t) {
			where := r.spec.name + " " + stage
			vols := map[string]corev1.Volume{}
			for _, v := range p.spec.Volumes {
				if v.Secret != nil {
					vols[v.Name] = v
				}
				assert.Nil(t, v.Projected, "%s: projected volume %s", where, v.Name)
			}
			var want []string
			for _, vol := range enabled {
				if contains(mounts[vol], stage) {
					want = append(want, vol)
				}
			}
			got := make([]string, 0, len(vols))
			for vol := range vols {
				got = append(got, vol)
			}
			assert.ElementsMatch(t, want, got, "%s: secret volumes", where)
			if v, ok := vols["nats-auth"]; ok {
				natsSecrets[stage] = v.Secret.SecretName
			}
			c := p.spec.Containers[0]
			for env, vol := range envs {
				if v := envValue(c, env); v != "" {
					_, ok := vols[vol]
					assert.True(t, ok, "%s: %s=%s without the %s volume", where, env, v, vol)
					mounted := false
					for _, m := range c.VolumeMounts {
						mounted = mounted || (m.Name == vol && strings.HasPrefix(v, m.MountPath+"/"))
					}
					assert.True(t, mounted, "%s: %s=%s is not under the %s mount", where, env, v, vol)
				}
			}
			if _, ok := vols["nats-auth"]; ok {
				assert.Equal(t, stage == "writer", envValue(c, "STORMWEIR_BUS_MANAGE_STREAMS") == "",
					"%s: only the writer manages the streams", where)
			}
			token := p.spec.AutomountServiceAccountToken
			require.NotNil(t, token, "%s: automountServiceAccountToken unset", where)
			// The writer has an API token, and the receiver where it
			// reviews tokens (the secured renders) or watches events
			// (the dev renders).
			reviews := stage == "receiver" && (r.spec.name == "helm-secured" || r.spec.name == "kustomize-ha")
			wantToken := stage == "writer" || reviews || stage == "receiver" && watches[r.spec.name]
			assert.Equal(t, wantToken, *token, "%s: API token mounted", where)
		}
		if len(natsSecrets) > 0 {
			distinct := map[string]bool{}
			for _, name := range natsSecrets {
				distinct[name] = true
			}
			assert.Len(t, distinct, 4, "%s: each stage its own NATS Secret: %v", r.spec.name, natsSecrets)
		}
	}
}

// watches names the renders whose receiver watches Kubernetes events.
var watches = map[string]bool{"helm-dev": true, "kustomize-dev": true}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestRender_haScalesEveryStage: in both ha renders every stage has a
// PodDisruptionBudget and an autoscaler with at least two replicas (KEDA
// on the consumer lag for the workers, an HPA on CPU for the receiver),
// and no Deployment states a replica count the autoscaler would fight.
func TestRender_haScalesEveryStage(t *testing.T) {
	streams := map[string]string{"deduper": "STORMWEIR_SIGNALS", "aggregator": "STORMWEIR_INCIDENTS", "writer": "STORMWEIR_INCIDENTS"}
	for _, r := range renders(t) {
		if !strings.HasSuffix(r.spec.name, "-ha") {
			continue
		}
		for _, d := range r.byKind("Deployment") {
			_, found, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas")
			assert.False(t, found, "%s: %s states replicas", r.spec.name, d.GetName())
		}
		pdbs := map[string]bool{}
		for _, p := range r.byKind("PodDisruptionBudget") {
			c, _, _ := unstructured.NestedString(p.Object, "spec", "selector", "matchLabels", "app.kubernetes.io/component")
			pdbs[c] = true
		}
		assert.Equal(t, map[string]bool{"receiver": true, "deduper": true, "aggregator": true, "writer": true}, pdbs, r.spec.name)

		hpas := r.byKind("HorizontalPodAutoscaler")
		require.Len(t, hpas, 1, r.spec.name)
		minR := intAt(hpas[0].Object, "spec", "minReplicas")
		target, _, _ := unstructured.NestedString(hpas[0].Object, "spec", "scaleTargetRef", "name")
		assert.GreaterOrEqual(t, minR, int64(2), r.spec.name)
		assert.True(t, strings.HasSuffix(target, "-receiver"), "%s: HPA scales %s", r.spec.name, target)

		scaled := map[string]bool{}
		for _, so := range r.byKind("ScaledObject") {
			minR := intAt(so.Object, "spec", "minReplicaCount")
			assert.GreaterOrEqual(t, minR, int64(2), "%s %s", r.spec.name, so.GetName())
			triggers, _, _ := unstructured.NestedSlice(so.Object, "spec", "triggers")
			require.Len(t, triggers, 1)
			trig := triggers[0].(map[string]any)
			meta := trig["metadata"].(map[string]any)
			assert.Equal(t, "nats-jetstream", trig["type"])
			stage := meta["consumer"].(string)
			scaled[stage] = true
			assert.Equal(t, streams[stage], meta["stream"], "%s: %s's stream", r.spec.name, stage)
			for _, k := range []string{"natsServerMonitoringEndpoint", "account", "lagThreshold"} {
				assert.NotEmpty(t, meta[k], "%s: %s trigger %s", r.spec.name, stage, k)
			}
		}
		assert.Equal(t, map[string]bool{"deduper": true, "aggregator": true, "writer": true}, scaled, r.spec.name)
	}
}

// intAt reads a number of a decoded object: YAML decoded through JSON
// holds numbers as float64.
func intAt(obj map[string]any, path ...string) int64 {
	switch v := dig(obj, path...).(type) {
	case int64:
		return v
	case float64:
		return int64(v)
	}
	return 0
}

// TestHelm_imageByDigest: image.digest pins the image by digest next to
// its tag.
func TestHelm_imageByDigest(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	digest := "sha256:" + strings.Repeat("ab", 32)
	out, err := render(root, renderSpec{name: "digest", helmArgs: []string{"--set", "image.digest=" + digest}})
	require.NoError(t, err)
	objs, err := decodeObjects(out)
	require.NoError(t, err)
	r := &rendering{spec: renderSpec{name: "digest"}, objects: objs}
	for stage, p := range r.stagePods(t) {
		assert.Equal(t, "ghcr.io/stormweir/stormweir:0.1.0@"+digest, p.spec.Containers[0].Image, stage)
	}
}

// TestHelm_refusesBadValues: values that would deploy something broken
// fail the render with a message naming the value.
func TestHelm_refusesBadValues(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"receiver.auth.existingSecret="}, "receiver.auth.existingSecret is required"},
		{[]string{"writer.resources.limits.memory=lots"}, `writer.resources.limits.memory "lots"`},
		{[]string{"nats.auth.method=kerberos"}, `nats.auth.method "kerberos"`},
		{[]string{"nats.tls.enabled=true"}, "nats.tls.secretName is required"},
		{[]string{"config.writer.environment.override_configmap=just-a-name"}, "want namespace/name"},
	} {
		var args []string
		for _, s := range c.set {
			args = append(args, "--set", s)
		}
		_, err := render(root, renderSpec{name: "bad", helmArgs: args})
		require.Error(t, err, "%v", c.set)
		assert.Contains(t, err.Error(), c.want, "%v", c.set)
	}
}

// TestHelm_watcherInNamedNamespaces: a watcher limited to namespaces gets
// the events ClusterRole bound in each of them by a RoleBinding, and no
// cluster-wide binding.
func TestHelm_watcherInNamedNamespaces(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	out, err := render(root, renderSpec{name: "watcher", helmArgs: []string{
		"--set", "config.watcher.enabled=true", "--set", "config.watcher.namespaces={shop,payments}"}})
	require.NoError(t, err)
	objs, err := decodeObjects(out)
	require.NoError(t, err)
	var bindings []string
	for _, o := range objs {
		switch o.GetKind() {
		case "RoleBinding":
			bindings = append(bindings, o.GetNamespace()+"/"+o.GetName())
		case "ClusterRoleBinding":
			assert.NotContains(t, o.GetName(), "watcher", "no cluster-wide binding of the watcher")
		}
	}
	assert.ElementsMatch(t, []string{"shop/stormweir-watcher", "payments/stormweir-watcher"}, bindings)
}

// TestHelm_tracingReachesEveryStage: with tracing.enabled every stage's
// configuration names the collector with the sample ratio, and every
// stage's NetworkPolicy lets it reach the collector's pods on the OTLP
// port; without it, no stage names a collector and no policy opens the
// port.
func TestHelm_tracingReachesEveryStage(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	for _, on := range []bool{true, false} {
		out, err := render(root, renderSpec{name: "tracing", helmArgs: []string{
			"--set", fmt.Sprintf("tracing.enabled=%v", on), "--set", "networkPolicy.enabled=true",
			"--set", "tracing.endpoint=http://collector.obs.svc:4318", "--set", "tracing.sampleRatio=0.5",
			"--set", "tracing.collector.namespace=obs", "--set", "tracing.collector.port=4318"}})
		require.NoError(t, err)
		objs, err := decodeObjects(out)
		require.NoError(t, err)
		configs, policies := 0, 0
		for _, o := range objs {
			switch o.GetKind() {
			case "ConfigMap":
				data, ok, _ := unstructured.NestedString(o.Object, "data", "config.yaml")
				if !ok {
					continue
				}
				configs++
				var cfg struct {
					Tracing struct {
						Endpoint    string  `yaml:"endpoint"`
						SampleRatio float64 `yaml:"sample_ratio"`
					} `yaml:"tracing"`
				}
				require.NoError(t, yaml.Unmarshal([]byte(data), &cfg), o.GetName())
				if on {
					assert.Equal(t, "http://collector.obs.svc:4318", cfg.Tracing.Endpoint, o.GetName())
					assert.Equal(t, 0.5, cfg.Tracing.SampleRatio, o.GetName())
				} else {
					assert.Empty(t, cfg.Tracing.Endpoint, o.GetName())
				}
			case "NetworkPolicy":
				if o.GetName() == "stormweir-nats" {
					continue
				}
				policies++
				egress, _, _ := unstructured.NestedSlice(o.Object, "spec", "egress")
				found := false
				for _, e := range egress {
					rule := e.(map[string]any)
					for _, p := range rule["ports"].([]any) {
						if fmt.Sprint(p.(map[string]any)["port"]) != "4318" {
							continue
						}
						found = true
						to := rule["to"].([]any)[0].(map[string]any)
						ns, _, _ := unstructured.NestedString(to, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name")
						assert.Equal(t, "obs", ns, o.GetName())
					}
				}
				assert.Equal(t, on, found, "%s: egress to the collector with tracing.enabled=%v", o.GetName(), on)
			}
		}
		assert.Positive(t, configs)
		assert.Equal(t, 4, policies, "one policy per stage")
	}
}
