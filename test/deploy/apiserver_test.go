package deploy

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/test/testenv"
)

// apiServer is the package's one test control plane (kube-apiserver and
// etcd from KUBEBUILDER_ASSETS) with stormweir's, KEDA's and the
// prometheus-operator's CRDs installed; TestMain stops it.
var apiServer struct {
	once sync.Once
	env  *envtest.Environment
	cfg  *rest.Config
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if apiServer.env != nil {
		_ = apiServer.env.Stop()
	}
	os.Exit(code)
}

// startAPIServer returns the shared control plane's rest config.
func startAPIServer(t testing.TB) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: this test needs a real kube-apiserver and etcd.\n" +
			"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	}
	crds := crdsDir(t)
	apiServer.once.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			apiServer.err = err
			return
		}
		ctrllog.SetLogger(logr.Discard())
		apiServer.env = &envtest.Environment{
			CRDDirectoryPaths: []string{
				filepath.Join(root, "deploy", "crd"),
				filepath.Join(crds, "keda"),
				filepath.Join(crds, "prometheus-operator"),
			},
			ErrorIfCRDPathMissing: true,
			ControlPlane:          envtest.ControlPlane{APIServer: &envtest.APIServer{StopTimeout: 3 * time.Second}},
		}
		apiServer.cfg, apiServer.err = apiServer.env.Start()
	})
	require.NoError(t, apiServer.err, "starting the test control plane (KUBEBUILDER_ASSETS=%s)", os.Getenv("KUBEBUILDER_ASSETS"))
	return apiServer.cfg
}

// TestAPIServer_acceptsEveryObject applies every object of every render to
// the real API server by server-side apply, as `kubectl apply
// --server-side` would: the server validates each against its schema
// (built-in kinds, our CRD, KEDA's ScaledObject, the prometheus-operator's
// PodMonitor and PrometheusRule) and must accept all of them. Each
// render has its own field manager; renders that share names overwrite one
// another, as an upgrade from one to the next would.
func TestAPIServer_acceptsEveryObject(t *testing.T) {
	cfg := startAPIServer(t)
	c, err := client.New(cfg, client.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	for _, r := range renders(t) {
		t.Run(r.spec.name, func(t *testing.T) {
			owner := client.FieldOwner("stormweir-deploy-test-" + r.spec.name)
			// Namespaces first: the render's own, then any other a
			// namespaced object names (Helm renders into an existing one;
			// the NATS policy lives in NATS's).
			// (Apply writes the server's answer into the object: always a copy.)
			for _, o := range r.byKind("Namespace") {
				require.NoError(t, c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), owner, client.ForceOwnership))
			}
			for _, o := range r.objects {
				if ns := o.GetNamespace(); ns != "" {
					err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
					if err != nil && !apierrors.IsAlreadyExists(err) {
						require.NoError(t, err, "creating namespace %s", ns)
					}
				}
			}
			applied := map[string]int{}
			for _, o := range r.objects {
				obj := o.DeepCopy()
				if obj.GetNamespace() == "" && r.spec.isHelm() && namespaced(obj.GetKind()) {
					// helm template leaves the release namespace to the
					// client for objects whose template omits it.
					obj.SetNamespace(helmNamespace)
				}
				err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), owner, client.ForceOwnership)
				if !assert.NoError(t, err, "%s %s/%s refused", obj.GetKind(), obj.GetNamespace(), obj.GetName()) {
					continue
				}
				// Read it back: the server stored it.
				got := &unstructured.Unstructured{}
				got.SetGroupVersionKind(obj.GroupVersionKind())
				require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(obj), got))
				applied[obj.GetKind()]++
			}
			assert.Equal(t, r.kinds(), applied, "every object applied")
			t.Logf("%s: applied %d objects: %s", r.spec.name, len(r.objects), kindList(applied))
		})
	}
}

// TestAPIServer_refusesWhatTheSchemasForbid shows the acceptance above
// means something: the same server refuses a ScaledObject with a field
// KEDA's schema does not have, a PrometheusRule whose rule lacks its
// expression, and a Deployment whose user is a name.
func TestAPIServer_refusesWhatTheSchemasForbid(t *testing.T) {
	cfg := startAPIServer(t)
	c, err := client.New(cfg, client.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	var ha *rendering
	for _, r := range renders(t) {
		if r.spec.name == "helm-ha" {
			ha = r
		}
	}
	require.NotNil(t, ha)
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "refused"}}))
	broken := func(kind string, mutate func(map[string]any)) *unstructured.Unstructured {
		o := ha.byKind(kind)[0].DeepCopy()
		o.SetNamespace("refused")
		mutate(o.Object)
		return o
	}
	for name, o := range map[string]*unstructured.Unstructured{
		"ScaledObject with an unknown field": broken("ScaledObject", func(m map[string]any) {
			m["spec"].(map[string]any)["lagThreshold"] = "100"
		}),
		"PrometheusRule rule without expr": broken("PrometheusRule", func(m map[string]any) {
			g := m["spec"].(map[string]any)["groups"].([]any)[0].(map[string]any)
			delete(g["rules"].([]any)[0].(map[string]any), "expr")
		}),
		"Deployment with runAsUser nonroot": broken("Deployment", func(m map[string]any) {
			pod := m["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			pod["securityContext"].(map[string]any)["runAsUser"] = "nonroot"
		}),
	} {
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("stormweir-deploy-test"), client.ForceOwnership)
		assert.Error(t, err, name)
		t.Logf("%s: %v", name, err)
	}
}

// namespaced reports whether a kind the renders contain is namespaced.
func namespaced(kind string) bool {
	switch kind {
	case "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition":
		return false
	}
	return true
}
