#!/usr/bin/env bash
# The C suite of the tidelog C ABI, built with gcc (C99, -Wall -Wextra
# -Werror -pedantic) and run under AddressSanitizer + UndefinedBehavior-
# Sanitizer + LeakSanitizer, against BOTH libtidelog.so and libtidelog.a:
#   test_api      every function and every error path of the boundary
#   test_bad_values  the shared list of bad records, refused by every write
#   test_options     the options schema: units, unknown and out-of-range options
#   test_threads  4 threads on one handle while a listener runs
#   repl_node     cloud and edge as two processes over mutual TLS
#   test_log      the log callback sees a hub refuse a node it does not know
#   test_conflicts  the conflict option, counters, the conflict log and a C
#                 resolver, two nodes in one process over mutual TLS
#   test_disk     a full disk (a tmpfs: needs root, as CI) and table budgets
# No sanitizer suppressions. Needs gcc, pkg-config and openssl (certs).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
profile_dir="$CARGO_TARGET_DIR/debug"
out="$CARGO_TARGET_DIR/c-tests"
src="$root/ffi/tests/c"

for tool in gcc pkg-config openssl; do
    command -v "$tool" >/dev/null || { echo "run_c_tests: $tool is required" >&2; exit 1; }
done

echo "-- build libtidelog (debug)"
cargo build -p tidelog-ffi --quiet
rm -rf "$out"
mkdir -p "$out/bin" "$out/scratch"

echo "-- pkg-config file"
"$root/ffi/gen-pc.sh" "$root" "$profile_dir" "$root/include" "$out/pkgconfig/tidelog.pc"
export PKG_CONFIG_PATH="$out/pkgconfig"
pkg-config --exists --print-errors tidelog
echo "   tidelog $(pkg-config --modversion tidelog): $(pkg-config --cflags --libs tidelog)"

echo "-- every function in include/tidelog.h is exercised by the C tests"
missing=0
functions=$(grep -vE '^\s*(\*|/\*)' include/tidelog.h | grep -oE '\btidelog_[a-z_]+\(' | tr -d '(' | sort -u)
[ "$(echo "$functions" | wc -l)" -gt 40 ] || { echo "could not list the header's functions" >&2; exit 1; }
for fn in $functions; do
    if ! grep -q "\b$fn(" "$src"/*.c; then
        echo "   not exercised: $fn" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || exit 1

echo "-- every declaration in include/tidelog.h has a Doxygen comment"
awk '
/^[[:space:]]*$/ { next }
/^(typedef |tidelog_status |const char \*|void |uint32_t |size_t |#define TIDELOG_[A-Z_]+ )|^    TIDELOG_[A-Z_]+ = / {
    n++
    if (prev !~ /\*\/[[:space:]]*$/) { print "   undocumented: " $0; bad = 1 }
}
{ prev = $0 }
END { if (n < 60) { print "   found only " n " declarations"; bad = 1 }; exit bad }' include/tidelog.h

if command -v g++ >/dev/null; then
    echo "-- header compiles as C++"
    g++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -Iinclude "$src/header_cxx.cpp"
fi

cflags=(-std=c99 -Wall -Wextra -Werror -pedantic -g -O1 -fno-omit-frame-pointer
        -fsanitize=address,undefined -fno-sanitize-recover=undefined)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="report_objects=1"
export RUST_BACKTRACE=0

echo "-- sanitizers are live (a deliberate leak must be reported)"
gcc "${cflags[@]}" "$src/leak_canary.c" -o "$out/bin/leak_canary"
if "$out/bin/leak_canary" 2>"$out/leak_canary.txt"; then
    echo "LeakSanitizer did not report the deliberate leak: leak checking is not working here" >&2
    exit 1
fi
grep -q "LeakSanitizer: detected memory leaks" "$out/leak_canary.txt"

# Link flags per variant: the shared library through pkg-config (with an
# rpath to the build tree), or the static archive plus its system libraries.
static_libs=$(pkg-config --static --libs-only-l tidelog | sed 's/-ltidelog//')
link_flags() {
    case $1 in
        shared) echo "$(pkg-config --libs tidelog) -Wl,-rpath,$profile_dir -lpthread" ;;
        static) echo "$profile_dir/libtidelog.a $static_libs" ;;
    esac
}

for variant in shared static; do
    echo "== C tests against libtidelog ($variant)"
    bin="$out/bin/$variant"
    mkdir -p "$bin"
    for prog in test_api test_bad_values test_options test_threads repl_node test_log test_conflicts test_disk; do
        # shellcheck disable=SC2046
        gcc "${cflags[@]}" $(pkg-config --cflags tidelog) "$src/$prog.c" -o "$bin/$prog" \
            $(link_flags "$variant")
    done
    if [ "$variant" = shared ]; then
        readelf -d "$bin/test_api" | grep -q 'NEEDED.*libtidelog.so' \
            || { echo "test_api is not linked against libtidelog.so" >&2; exit 1; }
    else
        if readelf -d "$bin/test_api" | grep -q 'NEEDED.*libtidelog'; then
            echo "static test_api still needs libtidelog.so" >&2; exit 1
        fi
    fi
    scratch="$out/scratch/$variant"
    mkdir -p "$scratch"

    echo "-- test_api"
    "$bin/test_api" "$scratch" 2> >(grep -v -e 'deliberate panic' -e '^thread .* panicked at' \
        -e 'RUST_BACKTRACE' -e '^$' >&2)
    echo "-- test_bad_values (tests/bad_values.txt, shared with Python and Node)"
    "$bin/test_bad_values" "$scratch" "$root/tests/bad_values.txt"
    echo "-- test_options (the options schema: units, unknown and out-of-range options)"
    "$bin/test_options" "$scratch"
    echo "-- test_threads"
    "$bin/test_threads" "$scratch"
    echo "-- test_disk: a full disk (tmpfs, root) and table disk budgets"
    "$bin/test_disk" "$scratch"

    echo "-- test_log: a refused link reaches the log callback"
    "$src/make_certs.sh" "$scratch/log_certs" hub stranger
    "$bin/test_log" "$scratch" "$scratch/log_certs"

    echo "-- test_conflicts: two nodes write the same keys while their link is down"
    "$src/make_certs.sh" "$scratch/conflict_certs" a b
    "$bin/test_conflicts" "$scratch" "$scratch/conflict_certs"

    echo "-- repl_node: cloud and edge processes over mutual TLS"
    repl="$scratch/repl"
    mkdir -p "$repl"
    "$src/make_certs.sh" "$repl/certs" cloud edge
    "$bin/repl_node" cloud "$repl/cloud" "$repl/certs" "$repl/port" "$repl/done" \
        > "$repl/cloud.log" 2>&1 &
    cloud_pid=$!
    edge_status=0
    "$bin/repl_node" edge "$repl/edge" "$repl/certs" "$repl/port" "$repl/done" \
        > "$repl/edge.log" 2>&1 || edge_status=$?
    if [ "$edge_status" != 0 ]; then
        kill "$cloud_pid" 2>/dev/null || true
    fi
    cloud_status=0
    wait "$cloud_pid" || cloud_status=$?
    sed 's/^/   edge  | /' "$repl/edge.log" | cut -c1-160
    sed 's/^/   cloud | /' "$repl/cloud.log" | cut -c1-160
    if [ "$edge_status" != 0 ] || [ "$cloud_status" != 0 ]; then
        echo "repl_node failed: edge $edge_status, cloud $cloud_status" >&2
        exit 1
    fi
done
echo "C tests: all passed (shared and static, ASan+UBSan+LSan)"
