#!/usr/bin/env bash
# fuzz.sh - builds every libFuzzer target in tests/fuzz with clang-14
# (-fsanitize=fuzzer,address,undefined) into build-fuzz/ and runs each for a
# bounded time on its committed seed corpus (issue 9, docs/reliability.md).
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [--build-only] [TARGET...]
#
# TARGET is a file name without fuzz_ and .c (connstr, message, mgmt,
# config, sql, ws, http, emulator_amqp, ...); default: all of tests/fuzz.
# Each target reads tests/fuzz/corpus/<target>/ (committed seeds, never
# written) and tests/fuzz/regressions/<target>/ (every crash ever found,
# replayed first: one that crashes again fails the run at once); new inputs
# go to build-fuzz/corpus/<target>/, crashes to build-fuzz/artifacts/.
# tests/fuzz/known/ holds crashes whose fix belongs to another owner: each
# is replayed and reported XFAIL while it still crashes, and fails the run
# (XPASS) once fixed, to be moved to regressions/ (tests/fuzz/known/README).
# --seeds rewrites the binary seeds of message and mgmt with the engine's own
# encoder (tests/fuzz/make_seeds.c) and exits.
# --build-only builds (or brings up to date) every target and exits; a later
# run then links nothing (scripts/run-tests.sh builds first, then fuzzes in
# the background while the reliability suites run).
# `make fuzz` runs 60 s per target, `make test` 30 s (SBUS_FUZZ_SECONDS), as
# CI does (issue 9); --jobs (default: the number of cores) run at a time.
# Prints one PASS/FAIL line per target and "fuzz: N passed, N failed".
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
seconds=60
seeds=0
build_only=0
jobs=$(nproc 2>/dev/null || echo 2)
targets=()
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --seeds) seeds=1; shift ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
    esac
done
out=${SBUS_FUZZ_BUILD:-build-fuzz}
mkdir -p "$out/obj" "$out/corpus" "$out/artifacts" "$out/logs"

if ! command -v clang-14 >/dev/null 2>&1; then
    echo "fuzz: installing clang-14"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang-14 >/dev/null ||
        { echo "fuzz: clang-14 is missing"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
fi
CC=clang-14
CFLAGS="-g -O1 -std=gnu11 -D_GNU_SOURCE -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -Wno-unused-parameter"
LDFLAGS="-fsanitize=fuzzer,address,undefined"
PROTON_INC=$(pkg-config --cflags-only-I libqpid-proton 2>/dev/null | sed 's|-I[^ ]*pkgconfig/\.\./\.\./include||')
JANSSON=$(pkg-config --cflags --libs jansson 2>/dev/null || echo -ljansson)

# Engine sources (the same list CMake and setup.py use) and the emulator's
# broker library (as emulator/CMakeLists.txt lists it).
core_srcs=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' core/sources.txt)
# The emulator's list is read from emulator/CMakeLists.txt (one truth).
emu_srcs=$(awk '/^set\(SBUS_EMU_LIB_SOURCES/ {on = 1} on { sub(/#.*/, ""); print; if (/\)/) exit }' \
    emulator/CMakeLists.txt | sed -e 's/set(SBUS_EMU_LIB_SOURCES//' -e 's/)//' | tr -s ' \t' '\n' |
    sed '/^$/d' | sed -e 's|^\${SBUS_ROOT}/||' -e '/\//!s|^|emulator/|')
EMU_DEFS=$(grep -q 'SBUS_EMU_WS=1' emulator/CMakeLists.txt && echo -DSBUS_EMU_WS=1)
newest_header=$(ls -t core/include/sbus/*.h core/src/*.h emulator/*.h 2>/dev/null | head -1)

# obj SRC SET: compiles SRC for object set SET (core|emu|plain) if stale; echoes the .o path.
obj() {
    local src=$1 set=$2 o
    # objects are kept per set and per flags, so a flag change rebuilds them
    local key
    key=$(echo "$CC $CFLAGS $EMU_DEFS $PROTON_INC" | cksum | cut -d' ' -f1)
    o=$out/obj/$set-$key/$(echo "$src" | tr / _).o
    mkdir -p "$out/obj/$set-$key"
    if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ "$newest_header" -nt "$o" ]; then
        local inc="-Icore/include -Icore/src $PROTON_INC"
        [ "$set" = emu ] && inc="-Iemulator $EMU_DEFS $inc"
        $CC $CFLAGS $inc -c "$src" -o "$o" || return 1
    fi
    echo "$o"
}

# build NAME: links build-fuzz/fuzz_NAME from tests/fuzz/fuzz_NAME.c.
build() {
    local name=$1 src=tests/fuzz/fuzz_$1.c objs=() set libs s o
    case $name in
    ws) set=plain; srcs="core/src/ws.c core/src/proxy.c core/src/alloc.c"; libs="-lcrypto" ;;
    http) set=plain; srcs="core/src/proxy.c core/src/alloc.c"; libs="-lcrypto" ;;
    config|sql|emu*) set=emu; srcs=$emu_srcs; libs="-lqpid-proton $JANSSON -lexpat -lssl -lcrypto -lm" ;;
    *) set=core; srcs=$core_srcs; libs="-lqpid-proton -lssl -lcrypto" ;;
    esac
    for s in $srcs; do
        o=$(obj "$s" "$set") || return 1
        objs+=("$o")
    done
    o=$(obj "$src" "$set") || return 1
    # relink only when an object is newer than the binary
    local bin=$out/fuzz_$name x stale=0
    [ -x "$bin" ] || stale=1
    for x in "$o" "${objs[@]}"; do
        [ "$stale" = 1 ] && break
        [ "$x" -nt "$bin" ] && stale=1
    done
    [ "$stale" = 0 ] && return 0
    $CC $LDFLAGS -o "$bin" "$o" "${objs[@]}" $libs
}

# run NAME: runs one target for $seconds in fork mode, so that a crash
# does not end the run: every crash, leak, timeout and OOM is written to
# build-fuzz/artifacts/NAME-* and judged afterwards (judge below).
run() {
    local name=$1 log=$out/logs/$1.log dirs=()
    mkdir -p "$out/corpus/$name" "$out/artifacts/old"
    mv "$out/artifacts/$name"-* "$out/artifacts/old/" 2>/dev/null
    dirs+=("$out/corpus/$name")
    [ -d "tests/fuzz/corpus/$name" ] && dirs+=("tests/fuzz/corpus/$name")
    [ -d "tests/fuzz/regressions/$name" ] && dirs+=("tests/fuzz/regressions/$name")
    "$out/fuzz_$name" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" "${dirs[@]}" >"$log" 2>&1
}

if [ "$seeds" = 1 ]; then
    mkdir -p tests/fuzz/corpus/message tests/fuzz/corpus/mgmt
    gcc -g -std=gnu11 -D_GNU_SOURCE -Icore/include -Icore/src $PROTON_INC -o "$out/make_seeds" \
        tests/fuzz/make_seeds.c $core_srcs -lqpid-proton -lssl -lcrypto && "$out/make_seeds" tests/fuzz/corpus
    exit
fi

if [ ${#targets[@]} = 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do
        n=$(basename "$f" .c); targets+=("${n#fuzz_}")
    done
fi

passed=0 failed=0
echo "fuzz: building ${targets[*]} with $CC into $out/"
t_build=$SECONDS
built=()
for t in "${targets[@]}"; do
    if build "$t" >"$out/logs/$t.build.log" 2>&1; then
        built+=("$t")
    else
        echo "FAIL fuzz $t: does not build (log: $out/logs/$t.build.log)"
        tail -15 "$out/logs/$t.build.log"
        failed=$((failed + 1))
    fi
done

echo "fuzz: built in $((SECONDS - t_build)) s"
if [ "$build_only" = 1 ]; then
    echo "fuzz: ${#built[@]} built, $failed failed to build"
    [ "$failed" = 0 ]
    exit
fi

echo "fuzz: running each target for $seconds s, $jobs at a time"
t_run=$SECONDS
declare -A pids
for t in "${built[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run "$t" &
    pids[$t]=$!
done
xfailed=0
# known_crash NAME LOG: 0 when LOG's sanitizer summary is a known bug of NAME.
known_crash() {
    local sigs=tests/fuzz/known/$1.sigs summary
    [ -f "$sigs" ] || return 1
    summary=$(grep -E '^SUMMARY:|runtime error:|ERROR: (libFuzzer|AddressSanitizer)|^fuzz_[a-z_]+: ' "$2" | head -4)
    [ -n "$summary" ] && grep -qE -f "$sigs" <<<"$summary"
}
# judge NAME: replays every artifact of the run; 0 when all are known bugs.
judge() {
    local t=$1 a bad=0 n=0
    for a in "$out/artifacts/$t"-*; do
        [ -f "$a" ] || continue
        n=$((n + 1))
        "$out/fuzz_$t" -timeout=10 -rss_limit_mb=2048 "$a" >"$a.log" 2>&1
        if known_crash "$t" "$a.log"; then
            echo "  known bug: $a ($(grep -E '^SUMMARY:|runtime error:|ERROR: libFuzzer|^fuzz_[a-z_]+: ' "$a.log" | head -1))"
        else
            echo "  NEW: $a (log: $a.log)"
            grep -E 'ERROR|SUMMARY|runtime error|^fuzz_[a-z_]+: ' "$a.log" | head -8 | sed 's/^/    /'
            bad=1
        fi
    done
    return $bad
}

for t in "${built[@]}"; do
    wait "${pids[$t]}"
    rc=$?
    execs=$(grep -oE '^#[0-9]+:' "$out/logs/$t.log" | tail -1 | tr -d '#:')
    cov=$(grep -oE 'cov: [0-9]+' "$out/logs/$t.log" | tail -1)
    nart=$(find "$out/artifacts" -maxdepth 1 -name "$t-*" ! -name '*.log' | wc -l)
    if [ "$nart" = 0 ] && [ "$rc" = 0 ]; then
        echo "PASS fuzz $t (${cov:-cov: ?}${execs:+, $execs runs})"
        passed=$((passed + 1))
    elif [ "$nart" = 0 ]; then
        echo "FAIL fuzz $t: exit $rc without a reproducer (log: $out/logs/$t.log)"
        tail -5 "$out/logs/$t.log"
        failed=$((failed + 1))
    elif judge "$t"; then
        echo "XFAIL fuzz $t: $nart input(s) hit known bugs only (tests/fuzz/known/README; ${cov:-cov: ?})"
        xfailed=$((xfailed + 1))
    else
        echo "FAIL fuzz $t: new crash (reproducers in $out/artifacts/; add each to tests/fuzz/regressions/$t/ once fixed)"
        failed=$((failed + 1))
    fi
    for k in tests/fuzz/known/"$t"/*; do
        [ -f "$k" ] || continue
        if "$out/fuzz_$t" -rss_limit_mb=2048 "$k" >"$out/logs/$t.known.log" 2>&1; then
            echo "XPASS fuzz $t: $k no longer crashes: move it to tests/fuzz/regressions/$t/ and its entry out of tests/fuzz/known/README"
            failed=$((failed + 1))
        else
            echo "XFAIL fuzz $t: $k still crashes (tests/fuzz/known/README)"
            xfailed=$((xfailed + 1))
        fi
    done
done
echo "fuzz: ran and judged in $((SECONDS - t_run)) s"
echo "fuzz: $passed passed, $failed failed, $xfailed xfailed"
[ "$failed" = 0 ]
