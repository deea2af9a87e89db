//go:build tools

// Package tools pins the kube-apiserver used as the envtest control plane.
// Build it with hack/testbins.sh (or `go build k8s.io/kubernetes/cmd/kube-apiserver`
// from this directory). It lives in its own module so that its large
// dependency graph never touches the main module's go.mod.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
