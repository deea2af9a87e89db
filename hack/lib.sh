# hack/lib.sh: the shared steps of the scripts that build a pinned tool from
# its own Go module under tools/ into a git-ignored cache under bin/
# (hack/testbins.sh, hack/alertmanager.sh). It is sourced, not run.
#
# What every such script promises, and this library keeps in one place:
#   - progress goes to stderr, prefixed by the script's name ($log_name);
#   - the last line of stdout is what the caller uses (a directory or a
#     binary path), whether the build ran or was skipped;
#   - --force rebuilds; --help prints the script's header comment;
#   - the build is skipped when <out>/.stamp equals the hash of everything
#     that went into it (recipe number, toolchain, platform, module files);
#     the old stamp is removed before building and the new one written only
#     after every binary is in place, so an interrupted build is redone;
#   - concurrent runs (parallel test jobs) are serialized on <out>/.lock.
#
# The stamp's exact bytes are part of the cache: changing what cache_stamp
# hashes invalidates every existing bin/ cache, so bump a script's recipe
# number instead when its build changes.
#
# A script uses it like this (after its header comment and set -euo pipefail):
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   parse_build_args "$@"                 # sets $force
#   mod="$root/tools/mytool"; out="$root/bin/mytool"; bin="$out/mytool"
#   use_hermetic_go
#   lock_cache "$out"
#   stamp="$(cache_stamp 1 "goversion=$(go_version_in "$mod")" -- "$mod"/go.mod ...)"
#   if cache_is_fresh "$out" "$stamp" "$bin"; then print_result "up to date" "$bin"; exit 0; fi
#   invalidate_cache "$out"
#   go_build_into "$bin" "$mod" -ldflags="-s -w" example.com/cmd/mytool
#   write_cache_stamp "$out" "$stamp"
#   print_result done "$bin"

# root is the repository's root with symlinks resolved; stamps name files
# relative to it, so it must not depend on the caller's working directory.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

# log_name prefixes progress lines: the script's name without .sh, unless the
# script set it before sourcing this file.
log_name="${log_name:-$(basename "$0" .sh)}"

# log prints a progress line to stderr (stdout is reserved for the result).
log() { echo "$log_name: $*" >&2; }

# parse_build_args handles the command line shared by the build scripts: none,
# -f/--force (sets force=1) or -h/--help (prints the header comment of the
# running script, i.e. its comment lines after the shebang, and exits).
parse_build_args() {
  force=0
  case "${1:-}" in
    "") ;;
    -f|--force) force=1 ;;
    -h|--help)
      awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
      exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
  esac
}

# use_hermetic_go checks that go is on PATH and sets hermetic-ish build
# settings: ignore any go.work, never rewrite go.mod/go.sum, static binaries
# without a C toolchain, no VCS stamping.
use_hermetic_go() {
  command -v go >/dev/null 2>&1 || { log "go not found in PATH"; exit 1; }
  export GOWORK=off
  export GOFLAGS="-mod=readonly -buildvcs=false"
  export CGO_ENABLED=0
}

# lock_cache creates the cache directory OUT and, when flock is available,
# holds an exclusive lock on OUT/.lock until the script exits (fd 9), so
# parallel runs wait for one build instead of racing on the same files.
lock_cache() {
  mkdir -p "$1"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$1/.lock"
    flock 9
  fi
}

# hash_cmd reads stdin and prints its SHA-256 in sha256sum's format.
hash_cmd() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi
}

# go_version_in prints the Go version used in module directory DIR (GOTOOLCHAIN
# may switch it per module, so it is asked there rather than globally).
go_version_in() {
  (cd "$1" && go env GOVERSION)
}

# cache_stamp RECIPE LINE... -- FILE... prints the hex SHA-256 of
# "recipe=RECIPE", each LINE, "platform=GOOS/GOARCH", then for each FILE a
# "== path" line (relative to $root) followed by its contents.
cache_stamp() {
  local recipe="$1" f
  shift
  {
    echo "recipe=$recipe"
    while [[ $# -gt 0 && "$1" != "--" ]]; do
      echo "$1"
      shift
    done
    [[ $# -gt 0 ]] && shift
    echo "platform=$(go env GOOS)/$(go env GOARCH)"
    for f in "$@"; do
      echo "== ${f#"$root"/}"
      cat "$f"
    done
  } | hash_cmd | awk '{print $1}'
}

# cache_is_fresh OUT STAMP BIN... succeeds when --force was not given, every
# BIN is executable and OUT/.stamp holds STAMP.
cache_is_fresh() {
  local out="$1" stamp="$2" b
  shift 2
  [[ $force -eq 0 && -f "$out/.stamp" ]] || return 1
  for b in "$@"; do
    [[ -x "$b" ]] || return 1
  done
  [[ "$(cat "$out/.stamp")" == "$stamp" ]]
}

# invalidate_cache removes OUT/.stamp before a build, so a build that fails or
# is interrupted halfway never leaves a stamp vouching for mixed binaries.
invalidate_cache() {
  rm -f "$1/.stamp"
}

# write_cache_stamp records STAMP in OUT/.stamp once every binary is built.
write_cache_stamp() {
  echo "$2" >"$1/.stamp"
}

# go_build_into DEST MODDIR ARGS... builds with go build -trimpath ARGS in
# module directory MODDIR, to DEST.tmp first and then renamed over DEST, so
# DEST is never a half-written binary; it logs how long the build took.
go_build_into() {
  local dest="$1" mod="$2" start=$SECONDS
  shift 2
  (cd "$mod" && go build -trimpath -o "$dest.tmp" "$@")
  mv -f "$dest.tmp" "$dest"
  log "${dest##*/} built in $((SECONDS - start))s"
}

# print_result logs "MESSAGE (RESULT)" and prints RESULT as the last line of
# stdout, which is what callers read.
print_result() {
  log "$1 ($2)"
  echo "$2"
}
