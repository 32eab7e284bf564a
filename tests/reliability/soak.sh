#!/usr/bin/env bash
# Soak of the Python and Lua clients (issue 9; not part of make test; about
# 5 minutes). Figures go to docs/reliability.md.
#   tests/reliability/soak.sh [BUILD_DIR]     (default: build)
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
cd "$top"
export SBUS_EMULATOR=${SBUS_EMULATOR:-$build/emulator/sbus-emulator}
export SBUS_RELIABILITY_DIR=$top/tests/reliability
rc=0
.venv/bin/python tests/reliability/soak.py "${@:2}" || rc=1
for lua in lua5.4:lua54 luajit:luajit; do
    LUA_CPATH="$build/${lua#*:}/?.so;;" LUA_CPATH_5_4="$build/${lua#*:}/?.so;;" \
    LUA_PATH="$top/bindings/lua/?.lua;;" LUA_PATH_5_4="$top/bindings/lua/?.lua;;" \
        "${lua%%:*}" tests/reliability/lua/soak.lua ${LUA_SOAK_ARGS:-} || rc=1
done
exit $rc
