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

force=0
case "${1:-}" in
  "") ;;
  -f|--force) force=1 ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
mod="$root/tools/alertmanager"
out="$root/bin/alertmanager"
bin="$out/alertmanager"

log() { echo "alertmanager: $*" >&2; }

command -v go >/dev/null 2>&1 || { log "go not found in PATH"; exit 1; }

# Hermetic-ish build settings: ignore any go.work, never rewrite go.mod/go.sum,
# a static binary without a C toolchain, no VCS stamping.
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
    # The toolchain actually used in the module (GOTOOLCHAIN may switch it).
    echo "goversion=$(cd "$mod" && go env GOVERSION)"
    echo "platform=$(go env GOOS)/$(go env GOARCH)"
    for f in "$mod"/go.mod "$mod"/go.sum "$mod"/tools.go; do
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
if [[ $force -eq 0 && -x "$bin" && -f "$out/.stamp" ]] &&
   [[ "$(cat "$out/.stamp")" == "$stamp" ]]; then
  log "up to date ($bin)"
  echo "$bin"
  exit 0
fi

rm -f "$out/.stamp"

# Alertmanager reports its version from prometheus/common's version package.
am_version="$(cd "$mod" && go list -m -f '{{.Version}}' github.com/prometheus/alertmanager)"
vpkg=github.com/prometheus/common/version
ldflags="-s -w"
ldflags+=" -X $vpkg.Version=${am_version#v}"
ldflags+=" -X $vpkg.Branch=HEAD"
ldflags+=" -X $vpkg.BuildUser=stormweir"

start=$SECONDS
log "building alertmanager $am_version..."
(cd "$mod" &&
  go build -trimpath -ldflags="$ldflags" -o "$bin.tmp" github.com/prometheus/alertmanager/cmd/alertmanager)
mv -f "$bin.tmp" "$bin"
log "alertmanager built in $((SECONDS - start))s"

echo "$stamp" >"$out/.stamp"
log "done ($bin)"
echo "$bin"
