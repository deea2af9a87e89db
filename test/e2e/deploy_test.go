package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// TestDeploy_manifestsAreAccepted creates every object of deploy/ (the
// CRD is installed by the control plane itself) in a real API server, so a
// manifest that the server would refuse fails here, not in a cluster.
func TestDeploy_manifestsAreAccepted(t *testing.T) {
	api := startAPIServer(t)
	ctx := context.Background()
	files := []string{"stormweir/namespace.yaml", "stormweir/config.yaml", "rbac/writer.yaml", "stormweir/stages.yaml"}
	created := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", f))
		require.NoError(t, err)
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var obj unstructured.Unstructured
			err := dec.Decode(&obj.Object)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, f)
			if len(obj.Object) == 0 {
				continue
			}
			require.NoError(t, api.Client.Create(ctx, &obj), "%s: %s %s", f, obj.GetKind(), obj.GetName())
			created++
		}
	}
	require.Equal(t, 14, created, "namespace, config and secret, writer RBAC (5), service account, 4 deployments and the service")
}
