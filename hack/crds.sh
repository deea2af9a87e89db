#!/usr/bin/env bash
# Fetch the third-party CRDs the deployment tests install in the test API
# server, so the rendered ScaledObjects, PodMonitors and PrometheusRules are
# validated against their real schemas:
#   - KEDA (github.com/kedacore/keda/v2, config/crd/bases; Apache-2.0);
#   - prometheus-operator (github.com/prometheus-operator/prometheus-operator,
#     example/prometheus-operator-crd; Apache-2.0).
#
# Usage:
#   hack/crds.sh            # fetch (or reuse) bin/crds/{keda,prometheus-operator}
#   hack/crds.sh --force    # fetch again even if the cache stamp matches
#
# Both come from the Go module proxy, as module archives pinned below by
# version and checksum (the go command also checks them against the checksum
# database). Nothing is committed: the files are copied to bin/crds/
# (git-ignored) with each module's LICENSE. The copy is skipped when
# bin/crds/.stamp matches the pins below.
#
# Progress goes to stderr; the last line of stdout is the directory.
# Tests find it there, or at $STORMWEIR_CRDS_DIR.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_build_args "$@"

out="$root/bin/crds"

# name module version h1-checksum directory-in-module
pins=(
  "keda github.com/kedacore/keda/v2 v2.21.0 h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps= config/crd/bases"
  "prometheus-operator github.com/prometheus-operator/prometheus-operator v0.85.0 h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s= example/prometheus-operator-crd"
)

use_hermetic_go

# Bump when the copy below changes (file set, layout).
recipe=1

lock_cache "$out"

stamp="$(cache_stamp "$recipe" "${pins[@]}" --)"
if cache_is_fresh "$out" "$stamp"; then
  print_result "up to date" "$out"
  exit 0
fi

invalidate_cache "$out"

# Outside any module, so go.mod files of this repository play no part.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for pin in "${pins[@]}"; do
  read -r name module version sum dir <<<"$pin"
  log "fetching $module@$version ($dir)..."
  json="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$module@$version")"
  got_sum="$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  moddir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  if [[ "$got_sum" != "$sum" ]]; then
    log "$module@$version: checksum $got_sum, want $sum"
    exit 1
  fi
  rm -rf "${out:?}/$name"
  mkdir -p "$out/$name"
  cp "$moddir/$dir"/*.yaml "$out/$name/"
  cp "$moddir/LICENSE" "$out/$name/LICENSE"
  chmod -R u+w "$out/$name"
  echo "$module $version $dir" >"$out/$name/SOURCE"
done

write_cache_stamp "$out" "$stamp"
print_result done "$out"
