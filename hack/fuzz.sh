#!/usr/bin/env bash
# Runs one Go fuzz target for FUZZ_TIME and fails unless it executed at
# least FUZZ_MIN_EXECS inputs: a fuzz step that passes while its workers sit
# idle (minimizing, stuck, starved) tests nothing.
#
#   hack/fuzz.sh ./pkg/signal/ FuzzDecodeAlertmanager
#
# FUZZ_TIME (default 10s) is the fuzzing time, after the build;
# FUZZ_MIN_EXECS (default 10000) the inputs it must execute;
# FUZZ_MINIMIZE_TIME (default 0: off) is go's -fuzzminimizetime. Its own
# default, 60s per new input, let the workers spend a short run minimizing
# instead of fuzzing, and off doubles the inputs run here. A failing
# input is saved under testdata/fuzz as found; shrink it with
# FUZZ_MINIMIZE_TIME=60s.
set -euo pipefail

if [ $# -ne 2 ] || [ "$1" = "--help" ]; then
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
pkg=$1 target=$2
fuzz_time=${FUZZ_TIME:-10s}
min_execs=${FUZZ_MIN_EXECS:-10000}
minimize_time=${FUZZ_MINIMIZE_TIME:-0}

out=$(mktemp)
# The inputs go's cache keeps from earlier runs are replayed first, before
# any fuzzing, and they only grow: a few hundred already took the whole of
# a short run. Each run starts from the seeds and a cache of its own.
corpus=$(mktemp -d)
trap 'rm -rf "$out" "$corpus"' EXIT

status=0
go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzz_time" \
	-fuzzminimizetime "$minimize_time" "$pkg" -args -test.fuzzcachedir="$corpus" 2>&1 | tee "$out" || status=$?
if [ "$status" -ne 0 ]; then
	echo "fuzz: $target failed (exit $status)" >&2
	exit "$status"
fi

# Progress lines read "fuzz: elapsed: 10s, execs: 123456 (12345/sec), ...";
# the last one is the total.
execs=$(sed -n 's/^fuzz: elapsed: .*, execs: \([0-9][0-9]*\) .*/\1/p' "$out" | tail -n 1)
if [ -z "$execs" ]; then
	echo "fuzz: $target printed no execution count; did it fuzz at all?" >&2
	exit 1
fi
if [ "$execs" -lt "$min_execs" ]; then
	echo "fuzz: $target executed $execs inputs in $fuzz_time, fewer than $min_execs" >&2
	exit 1
fi
echo "fuzz: $target executed $execs inputs in $fuzz_time"
