#!/usr/bin/env bash
# sanitize.sh - the memory checks of `make test` (issue 9), three steps:
#
#   sanitize.sh asan     builds the C tree with -DSBUS_SANITIZE=ON (ASan +
#                        UBSan, UB not recoverable) into build-asan/ and runs
#                        ctest there (leak detection on).
#   sanitize.sh valgrind [BUILD]
#                        runs the C unit tests that need no network (codecs,
#                        parsers, in-memory client<->broker pairs, failing
#                        allocators) from BUILD (default build/) under
#                        valgrind --error-exitcode=1 --leak-check=full.
#                        No suppression file: none is needed (Proton and
#                        OpenSSL are clean here); if one is ever added it must
#                        name only their internals and be documented in
#                        docs/reliability.md.
#   sanitize.sh python   builds the Python extension with
#                        -fsanitize=address,undefined into build-asan/py
#                        (a wheel, installed into the venv build-asan/venv made
#                        from Debian's python3) and runs tests/python once with
#                        libasan preloaded, PYTHONMALLOC=malloc (so ASan sees
#                        Python objects too) and detect_leaks=0 (CPython keeps
#                        its interned objects to the end; leaks are the C
#                        tests' job), against the ASan build of the emulator.
#   sanitize.sh all      the three in order.
#
# Every sanitizer report of every process (python, the emulator, CLI
# subprocesses) goes to build-asan/reports/ through ASAN_OPTIONS/UBSAN_OPTIONS
# log_path; a step with any report there fails, even when the tests passed.
# Output is made for scripts/run-tests.sh: ctest's summary line, pytest's
# summary line, and "valgrind: N passed, N failed".
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
asan=${SBUS_ASAN_BUILD:-build-asan}
jobs=$(nproc 2>/dev/null || echo 2)
reports=$top/$asan/reports

need() { # need PROGRAM PACKAGE: installs a missing tool from Debian
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "sanitize: installing $2"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

# fail_on_reports STEP: prints and counts the sanitizer reports left by STEP.
fail_on_reports() {
    local n
    n=$(find "$reports" -type f 2>/dev/null | wc -l)
    if [ "$n" != 0 ]; then
        echo "sanitize $1: $n sanitizer report(s) in $reports:"
        for f in "$reports"/*; do echo "--- $f"; head -40 "$f"; done
        return 1
    fi
    echo "sanitize $1: no sanitizer report"
}

build_asan() {
    mkdir -p "$asan"
    echo "sanitize: building $asan (log: $asan/build.log)"
    cmake -S . -B "$asan" -DSBUS_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$asan/build.log" 2>&1 &&
        cmake --build "$asan" -j "$jobs" >>"$asan/build.log" 2>&1 ||
        { tail -40 "$asan/build.log"; return 1; }
}

step_asan() {
    build_asan || { echo "0 tests passed, 1 tests failed out of 1"; return 1; }
    rm -rf "$reports"; mkdir -p "$reports"
    local rc
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$reports/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
    LSAN_OPTIONS="log_path=$reports/lsan" \
        ctest --test-dir "$asan" --output-on-failure -j "$jobs"
    rc=$?
    fail_on_reports asan || rc=1
    return $rc
}

# The C unit tests that need no socket and no emulator process.
# (test_inmem, test_alloc_failure and test_message run under valgrind in
# ctest already: tests/c/CMakeLists.txt)
VALGRIND_TESTS="tests/c/test_connstr tests/c/test_sas tests/c/test_ws tests/c/test_proxy
emulator/test_emu_config emulator/test_emu_sql emulator/test_emu_mgmt emulator/test_emu_broker
emulator/test_emu_tls emulator/test_emu_wire emulator/test_emu_clock emulator/test_emu_idle"

step_valgrind() {
    local build=${1:-build} p=0 f=0 t log
    need valgrind valgrind
    mkdir -p "$build/test-logs/valgrind"
    for t in $VALGRIND_TESTS; do
        [ -x "$build/$t" ] || continue
        log=$build/test-logs/valgrind/$(basename "$t").log
        if (cd "$build/$(dirname "$t")" &&
            valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect \
                --errors-for-leak-kinds=definite,indirect --track-fds=no \
                "./$(basename "$t")") >"$log" 2>&1; then
            p=$((p + 1)); echo "PASS valgrind $t"
        else
            f=$((f + 1)); echo "FAIL valgrind $t (log: $log)"; grep -E '^==[0-9]+==' "$log" | head -30
        fi
    done
    echo "valgrind: $p passed, $f failed"
    [ "$f" = 0 ] && [ "$p" != 0 ]
}

step_python() {
    local py=/usr/bin/python3 venv=$asan/venv libasan rc
    [ -x "$asan/emulator/sbus-emulator" ] || build_asan || return 1
    echo "sanitize: building the extension with ASan+UBSan (log: $asan/py-build.log)"
    rm -rf "$asan/dist"
    CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -O1 -g" \
    LDFLAGS="-fsanitize=address,undefined" SBUS_SKIP_EMULATOR=1 \
        "$py" setup.py -q build --build-base "$asan/py" bdist_wheel -d "$asan/dist" >"$asan/py-build.log" 2>&1 ||
        { tail -40 "$asan/py-build.log"; echo "1 failed"; return 1; }
    [ -x "$venv/bin/python" ] || "$py" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install -q --no-index --no-deps --force-reinstall "$asan"/dist/servicebus-*.whl \
        >"$asan/pip.log" 2>&1 || { tail -20 "$asan/pip.log"; echo "1 failed"; return 1; }
    libasan=$(gcc -print-file-name=libasan.so)
    rm -rf "$reports"; mkdir -p "$reports"
    LD_PRELOAD=$libasan PYTHONMALLOC=malloc \
    ASAN_OPTIONS="detect_leaks=0:log_path=$reports/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
    SBUS_EMULATOR=$top/$asan/emulator/sbus-emulator \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python
    rc=$?
    fail_on_reports python || rc=1
    return $rc
}

case ${1:-all} in
asan) step_asan ;;
valgrind) step_valgrind "${2:-build}" ;;
python) step_python ;;
all)
    rc=0
    step_asan || rc=1
    step_valgrind "${2:-build}" || rc=1
    step_python || rc=1
    exit $rc
    ;;
*) echo "usage: $0 asan|valgrind [BUILD]|python|all [BUILD]" >&2; exit 2 ;;
esac
