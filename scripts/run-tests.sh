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

run_ctest
[ -d tests/python ] && run_pytest python tests/python
[ -d tests/interop ] && ls tests/interop/test_*.py >/dev/null 2>&1 && run_pytest interop tests/interop
if [ -x tests/lua/run.sh ]; then
    run_busted lua5.4 lua5.4
    run_busted luajit luajit
fi

echo
if [ ${#bad_suites[@]} -gt 0 ]; then
    echo "failing suites: ${bad_suites[*]} (logs in $logs)"
fi
echo "total: $passed passed, $failed failed"
[ "$failed" = 0 ]
