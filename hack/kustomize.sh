#!/usr/bin/env bash
# Build the kustomize used by the deployment tests (test/deploy: kustomize
# build of deploy/kustomize/overlays/dev and ha, compared with golden
# renders, so the version is pinned rather than whatever kubectl embeds).
#
# Usage:
#   hack/kustomize.sh            # build (or reuse) bin/kustomize/kustomize
#   hack/kustomize.sh --force    # rebuild even if the cache stamp matches
#
# The version is pinned by the separate module tools/kustomize; bump it
# there (go get sigs.k8s.io/kustomize/kustomize/v5@vX.Y.Z && go mod tidy).
# The binary goes to bin/kustomize/ (git-ignored). The build is skipped
# when bin/kustomize/.stamp matches a hash of the module's files plus the
# Go version, OS and arch.
#
# Progress goes to stderr; the last line of stdout is the binary's path.
# Tests find it there, or at $STORMWEIR_KUSTOMIZE_BIN.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_build_args "$@"

mod="$root/tools/kustomize"
out="$root/bin/kustomize"
bin="$out/kustomize"

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

kustomize_version="$(cd "$mod" && go list -m -f '{{.Version}}' sigs.k8s.io/kustomize/kustomize/v5)"
log "building kustomize $kustomize_version..."
go_build_into "$bin" "$mod" -ldflags="-s -w -X sigs.k8s.io/kustomize/api/provenance.version=$kustomize_version" sigs.k8s.io/kustomize/kustomize/v5

write_cache_stamp "$out" "$stamp"
print_result done "$bin"
