#!/usr/bin/env bash
# Instructions per write with the conflict log off and on, counted by
# callgrind: the same binary and input both ways, so the count repeats
# where wall and CPU time on a shared machine do not. Counts the writing
# thread inside `measured_round` (the `conflicts` bench's timed part) and,
# separately, everything the process ran (fjall's background threads too).
#
#   core/benches/conflicts_count.sh [N]      (N records per round, default 2000)
#
# Per-function counts stay in $OUT (default a temporary directory) for
# `callgrind_annotate --inclusive=yes $OUT/<side>-<case>.cg`.
set -euo pipefail
n="${1:-2000}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
cd "$(dirname "$0")/../.."
bin=$(cargo bench -p tidelog --bench conflicts --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*conflicts-[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "conflicts bench binary not found (build it: cargo bench -p tidelog --bench conflicts --no-run)" >&2; exit 1; }
count() { # side tx index -> "writer total"
    local f="$out/$1-tx$2-idx$3"
    TIDELOG_BENCH_ONLY=$1 TIDELOG_BENCH_TX=$2 TIDELOG_BENCH_INDEX=$3 TIDELOG_BENCH_N=$n \
        valgrind --tool=callgrind --callgrind-out-file="$f.cg" --toggle-collect='*measured_round*' \
        "$bin" >/dev/null 2>"$f.log"
    local writer total
    writer=$(sed -n 's/^summary: //p' "$f.cg")
    TIDELOG_BENCH_ONLY=$1 TIDELOG_BENCH_TX=$2 TIDELOG_BENCH_INDEX=$3 TIDELOG_BENCH_N=$n \
        valgrind --tool=callgrind --callgrind-out-file="$f.all.cg" "$bin" >/dev/null 2>>"$f.log"
    total=$(sed -n 's/^summary: //p' "$f.all.cg")
    echo "$writer $total"
}
echo "instructions per record, $n records per round (files in $out)"
for tx in 1 1000; do
    for idx in 1 0; do
        read -r w_off t_off < <(count off $tx $idx)
        read -r w_on t_on < <(count on $tx $idx)
        awk -v tx=$tx -v idx=$idx -v n="$n" -v wo="$w_off" -v won="$w_on" -v to="$t_off" -v ton="$t_on" 'BEGIN {
            printf "%5s rec/commit, %-8s: writer off %8.0f on %8.0f (on/off %.4f); whole process (with fill) on/off %.4f\n",
                tx, (idx == 1 ? "index" : "no index"), wo / n, won / n, won / wo, ton / to }'
    done
done
