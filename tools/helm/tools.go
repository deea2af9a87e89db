//go:build tools

// Package tools pins the Helm used by the deployment tests (test/deploy):
// helm lint and helm template of deploy/helm/stormweir. Build it with
// hack/helm.sh (or `go build helm.sh/helm/v4/cmd/helm` from this
// directory). It lives in its own module so that Helm's dependency
// versions never fight with the main module's.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
