#!/usr/bin/env bash
# Build the envtest control plane (kube-apiserver + etcd) from Go modules.
#
# Usage:
#   export KUBEBUILDER_ASSETS="$(hack/testbins.sh)"
#   hack/testbins.sh --force     # rebuild even if the cache stamp matches
#
# Versions are pinned by the separate modules tools/kube-apiserver and
# tools/etcd; bump them there (go get ... && go mod tidy). The binaries go to
# bin/k8s/ (git-ignored). The build is skipped when bin/k8s/.stamp matches a
# hash of those modules' files plus the Go version, OS and arch, so any
# version bump triggers a rebuild. A cold build of kube-apiserver takes
# several minutes; a cached run takes well under a second.
#
# Progress goes to stderr; the last line of stdout is the directory to use as
# KUBEBUILDER_ASSETS (sigs.k8s.io/controller-runtime/pkg/envtest).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_build_args "$@"

apiserver_mod="$root/tools/kube-apiserver"
etcd_mod="$root/tools/etcd"
out="$root/bin/k8s"

use_hermetic_go

# Bump when the build recipe below changes (flags, ldflags, file set).
recipe=1

lock_cache "$out"

stamp="$(cache_stamp "$recipe" \
  "goversion=$(go_version_in "$apiserver_mod")" \
  "goversion-etcd=$(go_version_in "$etcd_mod")" -- \
  "$apiserver_mod"/go.mod "$apiserver_mod"/go.sum "$apiserver_mod"/tools.go \
  "$etcd_mod"/go.mod "$etcd_mod"/go.sum "$etcd_mod"/main.go)"
if cache_is_fresh "$out" "$stamp" "$out/kube-apiserver" "$out/etcd"; then
  print_result "up to date" "$out"
  exit 0
fi

invalidate_cache "$out"

# kube-apiserver: derive version ldflags from the pinned k8s.io/kubernetes.
k8s_version="$(cd "$apiserver_mod" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_time="$(cd "$apiserver_mod" && go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
[[ "$k8s_version" =~ ^v([0-9]+)\.([0-9]+)\. ]] || { log "cannot parse k8s version '$k8s_version'"; exit 1; }
k8s_major="${BASH_REMATCH[1]}"
k8s_minor="${BASH_REMATCH[2]}"
vpkg=k8s.io/component-base/version
ldflags="-s -w"
ldflags+=" -X $vpkg.gitVersion=$k8s_version"
ldflags+=" -X $vpkg.gitMajor=$k8s_major"
ldflags+=" -X $vpkg.gitMinor=$k8s_minor"
ldflags+=" -X $vpkg.gitTreeState=clean"
ldflags+=" -X $vpkg.buildDate=${k8s_time:-1970-01-01T00:00:00Z}"

log "building kube-apiserver $k8s_version (cold builds take several minutes)..."
go_build_into "$out/kube-apiserver" "$apiserver_mod" -ldflags="$ldflags" k8s.io/kubernetes/cmd/kube-apiserver

etcd_version="$(cd "$etcd_mod" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
log "building etcd $etcd_version..."
go_build_into "$out/etcd" "$etcd_mod" -ldflags="-s -w" .

write_cache_stamp "$out" "$stamp"
print_result done "$out"
