#!/usr/bin/env bash
# Single-record upserts and point gets through the C ABI vs the same calls
# on the Rust API, release build, in one run:
#
# 1. (the measure) ffi/src/bench.rs: one process, the SAME database and
#    records, the extern "C" functions and the Rust API alternating in small
#    batches; rates on wall clock and on the calling thread's CPU clock (the
#    latter is robust when other builds compete for the cores).
# 2. (a cross-check) a real C program, ffi/bench/bench_c.c, linked against
#    libtidelog.so and libtidelog.a, vs its Rust twin examples/bench_rust.rs,
#    as separate processes on separate databases, timed on the calling
#    thread's CPU clock; best of [rounds]. Noisier (separate databases).
#
# Usage: ffi/bench/run.sh [records] [gets] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
n=${1:-50000}
gets=${2:-200000}
rounds=${3:-3}
rel="$CARGO_TARGET_DIR/release"
out="$CARGO_TARGET_DIR/c-bench"
mkdir -p "$out"

echo "== 1. C ABI vs Rust API, same process, same database (3 runs)"
for run in 1 2 3; do
    TIDELOG_BENCH_RECORDS=$n TIDELOG_BENCH_GETS=$gets \
        cargo test --release --quiet -p tidelog-ffi --lib -- --ignored --nocapture abi_vs_rust \
        2>/dev/null | grep -E '^(same database|upsert|get)' | sed "s/^/run $run: /"
done
echo
echo "== 2. C program vs Rust program, separate processes (cross-check)"
cargo build --release --quiet -p tidelog-ffi --lib --example bench_rust
gcc -std=c99 -O2 -Wall -Wextra -Werror -Iinclude ffi/bench/bench_c.c -o "$out/bench_c_shared" \
    -L"$rel" -ltidelog -Wl,-rpath,"$rel"
gcc -std=c99 -O2 -Wall -Wextra -Werror -Iinclude ffi/bench/bench_c.c -o "$out/bench_c_static" \
    "$rel/libtidelog.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

scratch_base=/dev/shm
[ -d "$scratch_base" ] && [ -w "$scratch_base" ] || scratch_base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$scratch_base/tidelog-bench.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

declare -A best
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$2"; }
keep_best() { # variant metric value
    local k="$1.$2"
    if [ -z "${best[$k]:-}" ] || [ "$3" -gt "${best[$k]}" ]; then best[$k]=$3; fi
}
for r in $(seq "$rounds"); do
    for v in c_shared c_static rust; do
        d="$scratch/$v-$r"
        if [ "$v" = rust ]; then
            line=$("$rel/examples/bench_rust" "$d" "$n" "$gets")
        else
            line=$("$out/bench_$v" "$d" "$n" "$gets")
        fi
        rm -rf "$d"
        echo "round $r $v: $line"
        for m in upsert_per_s get_per_s get_json_per_s; do
            val=$(field "$m" "$line")
            [ -n "$val" ] && keep_best "$v" "$m" "$val"
        done
    done
done

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
echo
echo "best of $rounds rounds, $n records, $gets point gets (ops per thread-CPU second; ratio = C / Rust):"
printf '%-10s %12s %12s %12s\n' "" "C .so" "C .a" "Rust"
printf '%-10s %12s %12s %12s   .so %s  .a %s\n' upsert "${best[c_shared.upsert_per_s]}" \
    "${best[c_static.upsert_per_s]}" "${best[rust.upsert_per_s]}" \
    "$(pct "${best[c_shared.upsert_per_s]}" "${best[rust.upsert_per_s]}")" \
    "$(pct "${best[c_static.upsert_per_s]}" "${best[rust.upsert_per_s]}")"
printf '%-10s %12s %12s %12s   .so %s  .a %s  (Rust get = Record, no JSON text)\n' get \
    "${best[c_shared.get_per_s]}" "${best[c_static.get_per_s]}" "${best[rust.get_per_s]}" \
    "$(pct "${best[c_shared.get_per_s]}" "${best[rust.get_per_s]}")" \
    "$(pct "${best[c_static.get_per_s]}" "${best[rust.get_per_s]}")"
printf '%-10s %12s %12s %12s   .so %s  .a %s  (Rust get + to_json_string)\n' get_json \
    "${best[c_shared.get_per_s]}" "${best[c_static.get_per_s]}" "${best[rust.get_json_per_s]}" \
    "$(pct "${best[c_shared.get_per_s]}" "${best[rust.get_json_per_s]}")" \
    "$(pct "${best[c_static.get_per_s]}" "${best[rust.get_json_per_s]}")"
