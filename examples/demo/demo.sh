#!/usr/bin/env bash
# `make demo`: the whole project in one minute. Starts the bundled emulator on
# free ports, sends messages from Python and receives them in Lua, then the
# other way round, prints what crossed, and stops the emulator.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
emu=${SBUS_EMULATOR:-$build/emulator/sbus-emulator}
cd "$top"

out=$(mktemp)
"$emu" --config examples/emulator-config.json --host 127.0.0.1 --amqp-port 0 >"$out" 2>"$out.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out" "$out.err"' EXIT
for _ in $(seq 100); do
    grep -q '^sbus-emulator ready' "$out" && break
    kill -0 $pid 2>/dev/null || { cat "$out.err" >&2; exit 1; }
    sleep 0.05
done
addr=$(grep -o 'amqp=[^ ]*' "$out" | head -1 | cut -d= -f2)
port=${addr##*:}
echo "emulator: $(head -1 "$out")"
export SERVICEBUS_CONNECTION_STR="Endpoint=sb://localhost:$port;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
export LUA_CPATH="$build/lua54/?.so;;"

echo
echo "--- Python sends, Lua receives (queue 'demo')"
.venv/bin/python examples/demo/send.py demo "hello from Python" 3
lua5.4 examples/demo/receive.lua demo 3

echo
echo "--- Lua sends, Python receives (queue 'demo')"
lua5.4 examples/demo/send.lua demo "hello from Lua" 3
.venv/bin/python examples/demo/receive.py demo 3
