#!/usr/bin/env bash
# Runs the Lua reliability specs (tests/reliability/lua/*_spec.lua) with
# busted against the modules of a build, like tests/lua/run.sh:
#   tests/reliability/lua/run.sh [BUILD_DIR [lua5.4|luajit]]   (default: build, both)
# The emulator is $SBUS_EMULATOR, else BUILD/emulator/sbus-emulator; the
# relay that cuts connections is tests/reliability/relay.py under python3.
set -uo pipefail
top=$(cd "$(dirname "$0")/../../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
which=${2:-all}
export SBUS_BUILD_DIR=$build
export SBUS_EMULATOR=${SBUS_EMULATOR:-$build/emulator/sbus-emulator}
export SBUS_RELIABILITY_DIR=$top/tests/reliability
cd "$top"
rc=0
run_one() {
    local lua=$1 dir=$2 so=$build/$2/servicebus.so
    if [ ! -f "$so" ]; then
        echo "run.sh: $so is missing (build with cmake first)" >&2
        echo "0 successes / 0 failures / 1 error / 0 pending"
        rc=1
        return
    fi
    echo "-- busted on $lua with $so (tests/reliability/lua)"
    LUA_CPATH="$build/$dir/?.so;;" LUA_CPATH_5_4="$build/$dir/?.so;;" \
    LUA_PATH="$top/tests/reliability/lua/?.lua;$top/bindings/lua/?.lua;;" \
    LUA_PATH_5_4="$top/tests/reliability/lua/?.lua;$top/bindings/lua/?.lua;;" \
        busted --lua="$lua" -o plainTerminal --pattern=_spec tests/reliability/lua || rc=1
}
case $which in
    all) run_one lua5.4 lua54; run_one luajit luajit ;;
    lua5.4|lua54) run_one lua5.4 lua54 ;;
    luajit) run_one luajit luajit ;;
    *) echo "usage: $0 [BUILD_DIR [lua5.4|luajit]]" >&2; exit 2 ;;
esac
exit $rc
