#!/usr/bin/env bash
# Runs every test suite against the build in $1 (default: build) and the
# .venv, even when an earlier one fails, then prints one closing line with
# the totals ("total: N passed, N failed") and exits non-zero if anything
# failed or a suite ran no test. Each suite's full output is kept in
# $1/test-logs/.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${1:-build}
logs=$build/test-logs
mkdir -p "$logs"
export SBUS_EMULATOR=${SBUS_EMULATOR:-$top/$build/emulator/sbus-emulator}
export SBUS_BUILD_DIR=$top/$build

passed=0 failed=0 bad_suites=()

# add_counts NAME PASSED FAILED RC: books one suite's result.
add_counts() {
    local name=$1 p=${2:-0} f=${3:-0} rc=$4
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" != 0 ] || [ "$f" != 0 ] || [ "$p" = 0 ]; then
        bad_suites+=("$name")
        [ "$f" = 0 ] && failed=$((failed + 1))   # a crashed or empty suite counts as a failure
    fi
    printf '== %-12s %s passed, %s failed (exit %s)\n' "$name" "$p" "$f" "$rc"
}

run_ctest() {
    echo "== C tests (ctest)"
    ctest --test-dir "$build" --output-on-failure 2>&1 | tee "$logs/ctest.log"
    local rc=${PIPESTATUS[0]}
    local line total nfail
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$logs/ctest.log" | tail -1)
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
    nfail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
    add_counts ctest "$(( ${total:-0} - ${nfail:-0} ))" "${nfail:-0}" "$rc"
}

run_pytest() {
    local name=$1; shift
    echo "== $name (pytest)"
    .venv/bin/python -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    local last p f e
    last=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|no tests ran' "$logs/$name.log" | tail -1)
    p=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+')
    f=$(grep -oE '[0-9]+ failed' <<<"$last" | grep -oE '[0-9]+')
    e=$(grep -oE '[0-9]+ errors?' <<<"$last" | grep -oE '[0-9]+')
    add_counts "$name" "${p:-0}" "$(( ${f:-0} + ${e:-0} ))" "$rc"
}

run_busted() {
    local name=$1 lua=$2
    echo "== $name (busted on $lua)"
    ./tests/lua/run.sh "$build" "$lua" 2>&1 | tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    local last p f e
    last=$(grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' "$logs/$name.log" | tail -1)
    p=$(grep -oE '[0-9]+ success' <<<"$last" | grep -oE '[0-9]+')
    f=$(grep -oE '[0-9]+ failures?' <<<"$last" | grep -oE '[0-9]+')
    e=$(grep -oE '[0-9]+ errors?' <<<"$last" | grep -oE '[0-9]+')
    add_counts "$name" "${p:-0}" "$(( ${f:-0} + ${e:-0} ))" "$rc"
}

# --- reliability suites (issue 9, docs/reliability.md) -------------------

# count_log NAME LOG RC: books a log that ends with a ctest, pytest, busted
# or "N passed, N failed" summary line.
count_log() {
    local name=$1 log=$2 rc=$3 line p f e
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
    if [ -n "$line" ]; then
        local total nfail
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
        nfail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
        add_counts "$name" "$(( total - nfail ))" "$nfail" "$rc"
        return
    fi
    line=$(grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -1)
    if [ -n "$line" ]; then
        p=$(grep -oE '[0-9]+ success' <<<"$line" | grep -oE '[0-9]+')
        f=$(grep -oE '[0-9]+ failures?' <<<"$line" | grep -oE '[0-9]+')
        e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
        add_counts "$name" "${p:-0}" "$(( ${f:-0} + ${e:-0} ))" "$rc"
        return
    fi
    line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error)|no tests ran|^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
    add_counts "$name" "${p:-0}" "$(( ${f:-0} + ${e:-0} ))" "$rc"
}

# run_script NAME COMMAND...: runs a reliability script and books its log.
run_script() {
    local name=$1; shift
    echo "== $name ($*)"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "($name took $((SECONDS - t0)) s)" | tee -a "$logs/$name.log"
    count_log "$name" "$logs/$name.log" "$rc"
}

# The fuzz suite (issue 9: 30 s per target, as CI runs it) keeps both cores
# busy for 8 x 30 s / 2 jobs. The Python and Lua suites mostly wait (on the
# emulator, lock timers, receive max_wait), so the fuzzers run beside them in
# the background, niced so that the tests' event loops are not starved; the
# fuzz log is printed and booked at the end. SBUS_SKIP_RELIABILITY=1 skips it.
# It runs in a session of its own (setsid), so that an interrupted run can
# stop it and every fuzzer it started (background jobs ignore SIGINT).
start_fuzz() {
    echo "== fuzz (scripts/fuzz.sh --seconds ${SBUS_FUZZ_SECONDS:-30}, in the background)"
    fuzz_t0=$SECONDS
    setsid nice -n 10 ./scripts/fuzz.sh --seconds "${SBUS_FUZZ_SECONDS:-30}" >"$logs/fuzz.log" 2>&1 </dev/null &
    fuzz_pid=$!
    trap 'kill -TERM -- "-$fuzz_pid" 2>/dev/null; exit 130' INT TERM
}

finish_fuzz() {
    local rc
    echo "== fuzz (waiting for the background run)"
    fuzz_wait0=$SECONDS
    wait "$fuzz_pid"
    rc=$?
    trap - INT TERM
    echo "(fuzz took $((SECONDS - fuzz_t0)) s, beside the suites since ctest; waited $((SECONDS - fuzz_wait0)) s for it)" >>"$logs/fuzz.log"
    cat "$logs/fuzz.log"
    count_log fuzz "$logs/fuzz.log" "$rc"
}

run_ctest
[ "${SBUS_SKIP_RELIABILITY:-}" != 1 ] && start_fuzz
[ -d tests/python ] && run_pytest python tests/python
# Microsoft's JS SDK for tests/interop/test_ms_js_sdk.py (pinned by bench/js's lockfile, from
# the npm registry, about 5 s): without it those tests would skip on a fresh clone.
if [ -d tests/interop ] && [ ! -d bench/js/node_modules/@azure/service-bus ] && command -v npm >/dev/null; then
    (cd bench/js && timeout 300 npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) \
        || echo "run-tests: npm ci in bench/js failed: the JS SDK interop tests will skip"
fi
[ -d tests/interop ] && ls tests/interop/test_*.py >/dev/null 2>&1 && run_pytest interop tests/interop
if [ -x tests/lua/run.sh ]; then
    run_busted lua5.4 lua5.4
    run_busted luajit luajit
fi

if [ "${SBUS_SKIP_RELIABILITY:-}" != 1 ]; then
    run_script asan-ctest ./scripts/sanitize.sh asan
    run_script valgrind ./scripts/sanitize.sh valgrind "$build"
    run_script python-asan ./scripts/sanitize.sh python
    run_script reliability .venv/bin/python -m pytest -q -p no:cacheprovider tests/reliability
    run_script rel-lua5.4 ./tests/reliability/lua/run.sh "$build" lua5.4
    run_script rel-luajit ./tests/reliability/lua/run.sh "$build" luajit
    finish_fuzz
fi

echo
if [ ${#bad_suites[@]} -gt 0 ]; then
    echo "failing suites: ${bad_suites[*]} (logs in $logs)"
fi
echo "total: $passed passed, $failed failed"
[ "$failed" = 0 ]
