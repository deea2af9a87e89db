package receiver_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/stormweir/stormweir/pkg/config"
	"github.com/stormweir/stormweir/pkg/loadgen"
	"github.com/stormweir/stormweir/pkg/receiver"
	"github.com/stormweir/stormweir/test/testenv"
)

// startAPIServer starts a real kube-apiserver and etcd for the test.
func startAPIServer(t *testing.T) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: TokenReview is tested against a real kube-apiserver and etcd.\n" +
			"\texport KUBEBUILDER_ASSETS=\"$(hack/test-deps.sh | tail -n 1)\"")
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{ControlPlane: envtest.ControlPlane{APIServer: &envtest.APIServer{StopTimeout: 3 * time.Second}}}
	rc, err := env.Start()
	require.NoError(t, err, "starting the test control plane (KUBEBUILDER_ASSETS=%s)", os.Getenv("KUBEBUILDER_ASSETS"))
	t.Cleanup(func() { _ = env.Stop() })
	cs, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	return rc, cs
}

// serviceAccountToken creates ServiceAccount name in ns and returns a token
// of it from the TokenRequest API, bound to audiences (the API server's
// own when none), as a projected volume would hold it.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns, name string, audiences ...string) string {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, tr.Status.Token)
	return tr.Status.Token
}

// TestReceiver_tokenReview authenticates senders by real ServiceAccount
// tokens with a real API server: the audience, the SubjectAccessReview,
// the cache, the bounded review rate, and refusal when the API server
// does not answer.
func TestReceiver_tokenReview(t *testing.T) {
	rc, cs := startAPIServer(t)
	ctx := context.Background()
	ns := "senders-" + testenv.RandomID()[:8]
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// Alertmanager may post alertmanager signals, and nothing else.
	_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "post-alertmanager-signals"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"stormweir.io"}, Resources: []string{"signals"}, ResourceNames: []string{"alertmanager"}, Verbs: []string{"create"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alertmanager"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "post-alertmanager-signals"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "alertmanager", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	enable := func(c *config.Config) {
		c.Receiver.Auth.TokenReview.Enabled = true
		c.Receiver.Auth.TokenReview.Audiences = []string{"stormweir"}
		c.Receiver.Auth.TokenReview.Authorize = true
		c.Receiver.Auth.TokenReview.Namespace = ns
	}
	alert := loadgen.NewWebhook(podAlerts(1)...).JSON()
	grafana, err := os.ReadFile("../signal/testdata/grafana_kubernetes.json")
	require.NoError(t, err)
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	t.Run("who may post what", func(t *testing.T) {
		h := newHarnessWith(t, []receiver.Option{receiver.WithRestConfig(rc)}, enable)
		am := serviceAccountToken(t, cs, ns, "alertmanager", "stormweir")
		intruder := serviceAccountToken(t, cs, ns, "intruder", "stormweir")
		forTheAPIServer := serviceAccountToken(t, cs, ns, "alertmanager")

		cases := []struct {
			name string
			path string
			body []byte
			hdr  []string
			want int
		}{
			{"a projected token for the audience", receiver.PathAlertmanager, alert, bearer(am), http.StatusAccepted},
			{"the scheme in lower case", receiver.PathAlertmanager, alert, []string{"Authorization", "bearer " + am}, http.StatusAccepted},
			{"an endpoint its role does not name", receiver.PathGrafana, grafana, bearer(am), http.StatusForbidden},
			{"a ServiceAccount without a role", receiver.PathAlertmanager, alert, bearer(intruder), http.StatusForbidden},
			{"a token for the API server's audience", receiver.PathAlertmanager, alert, bearer(forTheAPIServer), http.StatusUnauthorized},
			{"a made-up token", receiver.PathAlertmanager, alert, bearer("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"), http.StatusUnauthorized},
			{"the static token still", receiver.PathAlertmanager, alert, bearer(token), http.StatusAccepted},
		}
		for _, tc := range cases {
			resp, body := h.post(tc.path, tc.body, tc.hdr...)
			assert.Equal(t, tc.want, resp.StatusCode, "%s: %s", tc.name, body)
		}
		assert.Len(t, h.stored(), 1, "only the accepted posts stored their alert (the same alert thrice)")

		// A revoked token is refused once its cached answer expired.
		require.NoError(t, cs.CoreV1().ServiceAccounts(ns).Delete(ctx, "alertmanager", metav1.DeleteOptions{}))
		resp, body := h.post(receiver.PathAlertmanager, alert, bearer(am)...)
		assert.Equal(t, http.StatusAccepted, resp.StatusCode, "answered from the cache: %s", body)
		// The API server learns of the deletion through its informers: until
		// then a review still says yes, and that answer is cached again.
		require.Eventually(t, func() bool {
			h.clk.Advance(h.cfg.Receiver.Auth.TokenReview.CacheTTL)
			resp, _ := h.post(receiver.PathAlertmanager, alert, bearer(am)...)
			return resp.StatusCode == http.StatusUnauthorized
		}, 20*time.Second, 50*time.Millisecond, "refused once the cached answer expired and the API server knows the deletion")
	})

	t.Run("reviews are rate-bounded", func(t *testing.T) {
		h := newHarnessWith(t, []receiver.Option{receiver.WithRestConfig(rc)}, enable, func(c *config.Config) {
			c.Receiver.Auth.TokenReview.ReviewsPerSecond = 1
			c.Receiver.Auth.TokenReview.ReviewBurst = 1
		})
		sender := serviceAccountToken(t, cs, ns, "sender", "stormweir")
		resp, _ := h.post(receiver.PathAlertmanager, alert, bearer("made-up-token-one")...)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the first review")
		resp, _ = h.post(receiver.PathAlertmanager, alert, bearer(sender)...)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "a second review within the second waits")
		assert.Equal(t, "5", resp.Header.Get("Retry-After"))
		resp, _ = h.post(receiver.PathAlertmanager, alert, bearer("made-up-token-one")...)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "a cached answer needs no review")
		h.clk.Advance(time.Second)
		resp, _ = h.post(receiver.PathAlertmanager, alert, bearer(sender)...)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "reviewed a second later (no role for sender)")
	})

	t.Run("fails closed when the API server does not answer", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		gone := rest.CopyConfig(rc)
		gone.Host = "https://" + l.Addr().String()
		require.NoError(t, l.Close())
		h := newHarnessWith(t, []receiver.Option{receiver.WithRestConfig(gone)}, enable)
		am := serviceAccountToken(t, cs, ns, "alertmanager-2", "stormweir")
		for range 2 {
			resp, body := h.post(receiver.PathAlertmanager, alert, bearer(am)...)
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s", body)
			assert.Equal(t, "5", resp.Header.Get("Retry-After"))
			assert.Contains(t, string(body), "could not be reviewed")
		}
		assert.Empty(t, h.stored(), "nothing unproven got in")
		resp, _ := h.post(receiver.PathAlertmanager, alert, bearer(token)...)
		assert.Equal(t, http.StatusAccepted, resp.StatusCode, "the static token needs no API server")
	})
}
