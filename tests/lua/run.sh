#!/usr/bin/env bash
# Runs the busted specs in tests/lua against the modules of a build:
#   tests/lua/run.sh [BUILD_DIR [lua5.4|luajit]]     (default: build, both)
# Lua 5.4 loads BUILD/lua54/servicebus.so, LuaJIT BUILD/luajit/servicebus.so.
# The emulator is $SBUS_EMULATOR, else BUILD/emulator/sbus-emulator.
# Exit status: non-zero if any spec failed on any interpreter.
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
which=${2:-all}
export SBUS_BUILD_DIR=$build
export SBUS_EMULATOR=${SBUS_EMULATOR:-$build/emulator/sbus-emulator}
cd "$top"

rc=0
run_one() {
    local lua=$1 dir=$2 so=$build/$2/servicebus.so roots=tests/lua
    if [ ! -f "$so" ]; then
        echo "run.sh: $so is missing (build with cmake first)" >&2
        echo "0 successes / 0 failures / 1 error / 0 pending"
        rc=1
        return
    fi
    # nginx embeds LuaJIT: the OpenResty specs run with the LuaJIT module
    [ "$dir" = luajit ] && [ "${SBUS_SKIP_OPENRESTY:-}" != 1 ] && roots="$roots tests/openresty"
    echo "-- busted on $lua with $so ($roots)"
    LUA_CPATH="$build/$dir/?.so;;" LUA_CPATH_5_4="$build/$dir/?.so;;" \
    LUA_PATH="$top/tests/lua/?.lua;$top/bindings/lua/?.lua;;" LUA_PATH_5_4="$top/tests/lua/?.lua;$top/bindings/lua/?.lua;;" \
    SBUS_EXPECT_MODULE="$so" \
        busted --lua="$lua" -o plainTerminal --pattern=_spec $roots || rc=1
}

case $which in
    all) run_one lua5.4 lua54; run_one luajit luajit ;;
    lua5.4|lua54) run_one lua5.4 lua54 ;;
    luajit) run_one luajit luajit ;;
    *) echo "usage: $0 [BUILD_DIR [lua5.4|luajit]]" >&2; exit 2 ;;
esac
exit $rc
