#!/usr/bin/env bash
# Build the Prometheus Alertmanager used as a real client by test/e2e.
#
# Usage:
#   hack/alertmanager.sh            # build (or reuse) bin/alertmanager/alertmanager
#   hack/alertmanager.sh --force    # rebuild even if the cache stamp matches
#
# The version is pinned by the separate module tools/alertmanager (v0.31.1:
# the module archives of v0.32 and later lack the UI assets and do not
# build); bump it there (go get ... && go mod tidy). The binary goes to
# bin/alertmanager/ (git-ignored). The build is skipped when
# bin/alertmanager/.stamp matches a hash of the module's files plus the Go
# version, OS and arch, so a version bump triggers a rebuild.
#
# Progress goes to stderr; the last line of stdout is the binary's path.
# Tests find it there, or at $STORMWEIR_ALERTMANAGER_BIN.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_build_args "$@"

mod="$root/tools/alertmanager"
out="$root/bin/alertmanager"
bin="$out/alertmanager"

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

# Alertmanager reports its version from prometheus/common's version package.
am_version="$(cd "$mod" && go list -m -f '{{.Version}}' github.com/prometheus/alertmanager)"
vpkg=github.com/prometheus/common/version
ldflags="-s -w"
ldflags+=" -X $vpkg.Version=${am_version#v}"
ldflags+=" -X $vpkg.Branch=HEAD"
ldflags+=" -X $vpkg.BuildUser=stormweir"

log "building alertmanager $am_version..."
go_build_into "$bin" "$mod" -ldflags="$ldflags" github.com/prometheus/alertmanager/cmd/alertmanager

write_cache_stamp "$out" "$stamp"
print_result done "$bin"
