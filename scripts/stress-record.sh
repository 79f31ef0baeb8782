#!/usr/bin/env bash
# Runs tests/record/stress.c under `heapsnap record --signal USR2 --every 50ms --at-exit` N times
# (default 100) and reports hangs (a run still going after 60 s), failures (exit status or output
# changed) and snapshots that do not load. Needs a release build:
#   cargo build --release -p heapsnap -p heapsnap-preload && scripts/stress-record.sh 100
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-100}"
heapsnap="$PWD/target/release/heapsnap"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cc -O2 -g -pthread -o "$work/stress" tests/record/stress.c
expected="$("$work/stress")"
hangs=0 failures=0 bad=0 snapshots=0
start=$(date +%s.%N)
for i in $(seq 1 "$runs"); do
    mkdir "$work/$i"
    out="$(timeout 60 "$heapsnap" --quiet --no-cache record --signal USR2 --every 50ms --at-exit \
        -o "$work/$i/s-%p-%n.hsnap" -- "$work/stress" 2>"$work/$i/stderr")"
    status=$?
    if [ "$status" -eq 124 ]; then
        hangs=$((hangs + 1)); echo "run $i: hang"
    elif [ "$status" -ne 0 ] || [ "$out" != "$expected" ]; then
        failures=$((failures + 1)); echo "run $i: status $status"; tail -3 "$work/$i/stderr"
    fi
    for snap in "$work/$i"/*.hsnap; do
        [ -e "$snap" ] || continue
        snapshots=$((snapshots + 1))
        "$heapsnap" --quiet --no-cache leaks "$snap" >/dev/null 2>&1 || { bad=$((bad + 1)); echo "run $i: $snap does not load"; }
    done
    rm -rf "$work/$i"
done
end=$(date +%s.%N)
echo "stress-record: $runs runs, $hangs hangs, $failures failures, $snapshots snapshots, $bad unreadable, $(awk "BEGIN { printf \"%.1f\", $end - $start }") s"
[ "$hangs" -eq 0 ] && [ "$failures" -eq 0 ] && [ "$bad" -eq 0 ]
