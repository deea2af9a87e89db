//go:build tools

// Package tools pins the kustomize used by the deployment tests
// (test/deploy: kustomize build of deploy/kustomize/overlays/*), so the
// golden renders do not depend on the kustomize embedded in whatever
// kubectl a machine has. Build it with hack/kustomize.sh. It lives in its
// own module so that kustomize's dependency versions never fight with the
// main module's.
package tools

import (
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
