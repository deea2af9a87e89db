package deploy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/stormweir/stormweir/test/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden renders in testdata/")

// Where the tests find the tools hack/test-deps.sh builds.
const (
	helmBinEnv      = "STORMWEIR_HELM_BIN"
	kustomizeBinEnv = "STORMWEIR_KUSTOMIZE_BIN"
	crdsDirEnv      = "STORMWEIR_CRDS_DIR"
)

// helmNamespace is the release namespace of the Helm renders.
const helmNamespace = "stormweir"

// renderSpec is one way of deploying stormweir.
type renderSpec struct {
	name string
	// helmArgs are the arguments after `helm template stormweir <chart>`
	// (nil for a kustomize render).
	helmArgs []string
	// overlay is the kustomize overlay under deploy/kustomize/overlays.
	overlay string
}

func (s renderSpec) isHelm() bool { return s.overlay == "" }

// specs are the renders every test checks: the chart with its default,
// dev and ha values, the chart with every credential mounted, and both
// kustomize overlays.
var specs = []renderSpec{
	{name: "helm-default", helmArgs: []string{}},
	{name: "helm-dev", helmArgs: []string{"-f", "values-dev.yaml"}},
	{name: "helm-ha", helmArgs: []string{"-f", "values-ha.yaml"}},
	{name: "helm-secured", helmArgs: []string{"-f", "values-ha.yaml", "-f", filepath.Join("..", "..", "..", "test", "deploy", "testdata", "secured-values.yaml")}},
	{name: "kustomize-dev", overlay: "dev"},
	{name: "kustomize-ha", overlay: "ha"},
}

// rendering is one spec's output.
type rendering struct {
	spec    renderSpec
	yaml    []byte
	objects []*unstructured.Unstructured
}

var (
	renderOnce sync.Once
	renderings map[string]*rendering
	renderErr  error
)

// renders returns every spec's rendering, rendered once per test binary.
func renders(t testing.TB) []*rendering {
	t.Helper()
	renderOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			renderErr = err
			return
		}
		renderings = map[string]*rendering{}
		for _, s := range specs {
			out, err := render(root, s)
			if err != nil {
				renderErr = fmt.Errorf("%s: %w", s.name, err)
				return
			}
			objs, err := decodeObjects(out)
			if err != nil {
				renderErr = fmt.Errorf("%s: decoding the render: %w", s.name, err)
				return
			}
			renderings[s.name] = &rendering{spec: s, yaml: out, objects: objs}
		}
	})
	require.NoError(t, renderErr)
	out := make([]*rendering, 0, len(specs))
	for _, s := range specs {
		out = append(out, renderings[s.name])
	}
	return out
}

// render runs helm template or kustomize build for s.
func render(root string, s renderSpec) ([]byte, error) {
	var cmd *exec.Cmd
	if s.isHelm() {
		bin, err := tool(root, helmBinEnv, "helm", "helm")
		if err != nil {
			return nil, err
		}
		args := append([]string{"template", "stormweir", ".", "--namespace", helmNamespace}, s.helmArgs...)
		cmd = exec.Command(bin, args...)
		cmd.Dir = filepath.Join(root, "deploy", "helm", "stormweir")
	} else {
		bin, err := tool(root, kustomizeBinEnv, "kustomize", "kustomize")
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(bin, "build", filepath.Join(root, "deploy", "kustomize", "overlays", s.overlay))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// tool finds a binary that hack/test-deps.sh builds into bin/<dir>/<name>,
// or the one named by $env. A missing tool fails the test: these tests are
// part of the suite, never skipped.
func tool(root, env, dir, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	p := filepath.Join(root, "bin", dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s missing at %s: run hack/test-deps.sh (make test does) or set $%s", name, p, env)
	}
	return p, nil
}

// crdsDir finds the third-party CRDs hack/crds.sh fetches.
func crdsDir(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(crdsDirEnv); p != "" {
		return p
	}
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	p := filepath.Join(root, "bin", "crds")
	if _, err := os.Stat(filepath.Join(p, ".stamp")); err != nil {
		t.Fatalf("CRDs missing at %s: run hack/crds.sh (make test does) or set $%s", p, crdsDirEnv)
	}
	return p
}

// decodeObjects splits a multi-document YAML stream into objects,
// dropping empty documents.
func decodeObjects(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		var obj unstructured.Unstructured
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(obj.Object) > 0 {
			objs = append(objs, &obj)
		}
	}
}

// kinds counts a rendering's objects by kind.
func (r *rendering) kinds() map[string]int {
	k := map[string]int{}
	for _, o := range r.objects {
		k[o.GetKind()]++
	}
	return k
}

// byKind returns the rendering's objects of kind.
func (r *rendering) byKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// podTemplate is one workload's pod spec.
type podTemplate struct {
	owner string // Kind/name
	stage string // app.kubernetes.io/component, empty for NATS and Redis
	spec  corev1.PodSpec
}

// podTemplates returns the pod specs of every Deployment and StatefulSet.
func (r *rendering) podTemplates(t testing.TB) []podTemplate {
	t.Helper()
	var out []podTemplate
	for _, o := range r.objects {
		if o.GetKind() != "Deployment" && o.GetKind() != "StatefulSet" {
			continue
		}
		raw, found, err := unstructured.NestedMap(o.Object, "spec", "template", "spec")
		require.NoError(t, err)
		require.True(t, found, "%s/%s has no pod template", o.GetKind(), o.GetName())
		var spec corev1.PodSpec
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(raw, &spec, true),
			"%s: %s/%s pod template", r.spec.name, o.GetKind(), o.GetName())
		labels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		stage := ""
		if labels["app.kubernetes.io/name"] == "stormweir" {
			stage = labels["app.kubernetes.io/component"]
		}
		out = append(out, podTemplate{owner: o.GetKind() + "/" + o.GetName(), stage: stage, spec: spec})
	}
	return out
}

// stagePods returns the pod templates of the four stages by stage name.
func (r *rendering) stagePods(t testing.TB) map[string]podTemplate {
	t.Helper()
	out := map[string]podTemplate{}
	for _, p := range r.podTemplates(t) {
		if p.stage != "" {
			out[p.stage] = p
		}
	}
	require.Len(t, out, 4, "%s: the four stages", r.spec.name)
	return out
}

// kindList formats a kind count as "Kind×n, ..." in name order.
func kindList(k map[string]int) string {
	names := make([]string, 0, len(k))
	for n := range k {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s×%d", n, k[n])
	}
	return strings.Join(parts, ", ")
}
