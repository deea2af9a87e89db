#!/usr/bin/env bash
# Build the Helm used by the deployment tests (test/deploy: helm lint and
# helm template of deploy/helm/stormweir).
#
# Usage:
#   hack/helm.sh            # build (or reuse) bin/helm/helm
#   hack/helm.sh --force    # rebuild even if the cache stamp matches
#
# The version is pinned by the separate module tools/helm; bump it there
# (go get helm.sh/helm/v4@vX.Y.Z && go mod tidy). The binary goes to
# bin/helm/ (git-ignored). The build is skipped when bin/helm/.stamp
# matches a hash of the module's files plus the Go version, OS and arch,
# so a version bump triggers a rebuild. A cold build costs about five
# CPU-minutes (4m20s user, 51s system measured; 21 minutes of wall time on
# two cores shared with a kube-apiserver build); a cached run takes well
# under a second.
#
# Progress goes to stderr; the last line of stdout is the binary's path.
# Tests find it there, or at $STORMWEIR_HELM_BIN.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_build_args "$@"

mod="$root/tools/helm"
out="$root/bin/helm"
bin="$out/helm"

use_hermetic_go

# Bump when the build recipe below changes (flags, ldflags, file set).
recipe=1

lock_cache "$out"

stamp="$(cache_stamp "$recipe" "goversion=$(go_version_in "$mod")" -- \
  "$mod"/go.mod "$mod"/go.sum "$mod"/tools.go)"
if cache_is_fresh "$out" "$stamp" "$bin"; then
  print_result "up to date" "$bin"
  exit 0
fi

invalidate_cache "$out"

# helm version reports what its Makefile stamps.
helm_version="$(cd "$mod" && go list -m -f '{{.Version}}' helm.sh/helm/v4)"
vpkg=helm.sh/helm/v4/internal/version
ldflags="-s -w"
ldflags+=" -X $vpkg.version=$helm_version"
ldflags+=" -X $vpkg.gitTreeState=clean"

log "building helm $helm_version..."
go_build_into "$bin" "$mod" -ldflags="$ldflags" helm.sh/helm/v4/cmd/helm

write_cache_stamp "$out" "$stamp"
print_result done "$bin"
