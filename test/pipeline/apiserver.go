package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
	"github.com/stormweir/stormweir/pkg/writer"

	"github.com/stormweir/stormweir/test/testenv"
)

// APIServer is a real kube-apiserver and etcd (envtest) with the
// RemediationRequest CRD installed, a kubeconfig file for the writer
// process and a client for the checks.
type APIServer struct {
	Env *envtest.Environment
	// Rest is the administrator's configuration (high client limits: the
	// checks must not be throttled).
	Rest *rest.Config
	// Client reads and creates objects for the checks.
	Client client.Client
	// Kubeconfig is the file the writer process uses.
	Kubeconfig string

	http *http.Client
}

// StartAPIServer starts envtest from $KUBEBUILDER_ASSETS (hack/testbins.sh
// builds it) and writes a kubeconfig of a system:masters user into dir.
func StartAPIServer(dir string) (*APIServer, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: the pipeline needs a real kube-apiserver and etcd;\n" +
			"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	// envtest logs through controller-runtime's logger, which complains
	// with a stack trace when nobody set one; its chatter is not wanted.
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "deploy", "crd")},
		ErrorIfCRDPathMissing: true,
		Scheme:                writer.Scheme(),
		ControlPlane:          envtest.ControlPlane{APIServer: &envtest.APIServer{StopTimeout: 3 * time.Second}},
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the test control plane (KUBEBUILDER_ASSETS=%s): %w", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	a := &APIServer{Env: env}
	fail := func(err error) (*APIServer, error) {
		_ = env.Stop()
		return nil, err
	}
	cfg.QPS, cfg.Burst = 5000, 10000
	a.Rest = cfg
	if a.Client, err = client.New(cfg, client.Options{Scheme: writer.Scheme()}); err != nil {
		return fail(fmt.Errorf("creating the API client: %w", err))
	}
	if a.http, err = rest.HTTPClientFor(cfg); err != nil {
		return fail(fmt.Errorf("creating the API HTTP client: %w", err))
	}
	user, err := env.AddUser(envtest.User{Name: "stormweir-writer", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fail(fmt.Errorf("adding the writer's user: %w", err))
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fail(fmt.Errorf("writing the writer's kubeconfig: %w", err))
	}
	a.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(a.Kubeconfig, kc, 0o600); err != nil {
		return fail(err)
	}
	return a, nil
}

// Stop stops the API server and etcd.
func (a *APIServer) Stop() error { return a.Env.Stop() }

// Namespace creates namespace name (an existing one is fine).
func (a *APIServer) Namespace(ctx context.Context, name string) error {
	err := a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// Requests lists every RemediationRequest in every namespace, in pages.
func (a *APIServer) Requests(ctx context.Context) ([]v1alpha1.RemediationRequest, error) {
	var all []v1alpha1.RemediationRequest
	cont := ""
	for {
		var l v1alpha1.RemediationRequestList
		if err := a.Client.List(ctx, &l, client.Limit(1000), client.Continue(cont)); err != nil {
			return nil, fmt.Errorf("listing remediation requests: %w", err)
		}
		all = append(all, l.Items...)
		if cont = l.Continue; cont == "" {
			return all, nil
		}
	}
}

// Metrics scrapes the API server's own /metrics.
func (a *APIServer) Metrics(ctx context.Context) (Metrics, error) {
	return Scrape(ctx, a.http, strings.TrimSuffix(a.Rest.Host, "/")+"/metrics")
}

// Profile writes a CPU profile of the API server over the given seconds
// to w (kube-apiserver serves pprof to administrators).
func (a *APIServer) Profile(ctx context.Context, seconds int, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(a.Rest.Host, "/"), seconds), nil)
	if err != nil {
		return err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API server profile: %s", resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// EtcdMetrics scrapes etcd's /metrics.
func (a *APIServer) EtcdMetrics(ctx context.Context) (Metrics, error) {
	u := *a.Env.ControlPlane.Etcd.URL
	u.Path = "/metrics"
	return Scrape(ctx, http.DefaultClient, u.String())
}

// RequestWrites counts the mutating requests the API server answered for
// RemediationRequests (create, update, patch, apply, delete; status
// included), from its apiserver_request_total.
func RequestWrites(m Metrics) float64 {
	return m.Sum("apiserver_request_total", func(l map[string]string) bool {
		if l["resource"] != "remediationrequests" {
			return false
		}
		switch l["verb"] {
		case "GET", "LIST", "WATCH", "get", "list", "watch":
			return false
		}
		return true
	})
}
