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

force=0
case "${1:-}" in
  "") ;;
  -f|--force) force=1 ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
apiserver_mod="$root/tools/kube-apiserver"
etcd_mod="$root/tools/etcd"
out="$root/bin/k8s"

log() { echo "testbins: $*" >&2; }

command -v go >/dev/null 2>&1 || { log "go not found in PATH"; exit 1; }

# Hermetic-ish build settings: ignore any go.work, never rewrite go.mod/go.sum,
# static binaries without a C toolchain, no VCS stamping.
export GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# Bump when the build recipe below changes (flags, ldflags, file set).
recipe=1

hash_cmd() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi
}

compute_stamp() {
  {
    echo "recipe=$recipe"
    # The toolchain actually used in each module (GOTOOLCHAIN may switch it).
    echo "goversion=$(cd "$apiserver_mod" && go env GOVERSION)"
    echo "goversion-etcd=$(cd "$etcd_mod" && go env GOVERSION)"
    echo "platform=$(go env GOOS)/$(go env GOARCH)"
    for f in "$apiserver_mod"/go.mod "$apiserver_mod"/go.sum "$apiserver_mod"/tools.go \
             "$etcd_mod"/go.mod "$etcd_mod"/go.sum "$etcd_mod"/main.go; do
      echo "== ${f#"$root"/}"
      cat "$f"
    done
  } | hash_cmd | awk '{print $1}'
}

mkdir -p "$out"

# Serialize concurrent runs (e.g. parallel test jobs) when flock is available.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$out/.lock"
  flock 9
fi

stamp="$(compute_stamp)"
if [[ $force -eq 0 && -x "$out/kube-apiserver" && -x "$out/etcd" && -f "$out/.stamp" ]] &&
   [[ "$(cat "$out/.stamp")" == "$stamp" ]]; then
  log "up to date ($out)"
  echo "$out"
  exit 0
fi

rm -f "$out/.stamp"

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

start=$SECONDS
log "building kube-apiserver $k8s_version (cold builds take several minutes)..."
(cd "$apiserver_mod" &&
  go build -trimpath -ldflags="$ldflags" -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
mv -f "$out/kube-apiserver.tmp" "$out/kube-apiserver"
log "kube-apiserver built in $((SECONDS - start))s"

start=$SECONDS
etcd_version="$(cd "$etcd_mod" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
log "building etcd $etcd_version..."
(cd "$etcd_mod" &&
  go build -trimpath -ldflags="-s -w" -o "$out/etcd.tmp" .)
mv -f "$out/etcd.tmp" "$out/etcd"
log "etcd built in $((SECONDS - start))s"

echo "$stamp" >"$out/.stamp"
log "done ($out)"
echo "$out"
