// Package deploy proves stormweir's deployment on real parts: the Helm
// chart (deploy/helm/stormweir) and the kustomize overlays
// (deploy/kustomize/overlays/dev and ha) are rendered by the real helm and
// kustomize (built from their Go modules by hack/helm.sh and
// hack/kustomize.sh), compared with golden renders, checked for pod specs a
// kubelet would refuse, loaded by the stage binaries' --print-config, and
// applied object by object to a real API server with the KEDA and
// prometheus-operator CRDs installed. The alert rules and dashboard
// queries are parsed by Prometheus's own parser and every metric they name
// is looked up in the registries the stages build.
//
// Regenerate the golden renders after a deliberate change with
//
//	go test ./test/deploy -run TestRender_golden -update
package deploy
