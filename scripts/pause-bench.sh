#!/usr/bin/env bash
# The snapshot pause on a big heap: a C program holding BLOCKS blocks of SIZE bytes (default 1M x
# 1 KiB = 1 GiB) asks for a snapshot with SIGUSR2; prints the time the world was stopped
# (capture.pause.ns, from the snapshot's META), the whole run's wall time and the snapshot size.
#   cargo build --release -p heapsnap -p heapsnap-preload && scripts/pause-bench.sh [BLOCKS [SIZE]]
set -euo pipefail
cd "$(dirname "$0")/.."
blocks="${1:-1000000}" size="${2:-1024}"
heapsnap="$PWD/target/release/heapsnap"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/big" scripts/pause-bench.c
start=$(date +%s.%N)
"$heapsnap" --quiet record --signal USR2 -o "$work/big.hsnap" -- "$work/big" "$blocks" "$size" >/dev/null 2>"$work/stderr"
end=$(date +%s.%N)
snap="$work/big-1.hsnap"
pause=$(sed -n 's/^heapsnap: the program was stopped \([0-9.]*\) s for this snapshot$/\1/p' "$work/stderr")
[ -n "$pause" ] || { cat "$work/stderr"; exit 1; }
echo "pause-bench: $blocks blocks of $size bytes: world stopped $pause s; run $(awk "BEGIN { printf \"%.1f\", $end - $start }") s; snapshot $(du -h "$snap" | cut -f1)"
