#!/usr/bin/env bash
# `make bench`: every client over every workload against ONE emulator, then the
# report. Usage: bench/run.sh [BUILD_DIR]   (default: build)
#
#   1. installs what bench/DEPS lists and is missing (Debian packages), and
#      Microsoft's JS SDK from bench/js/package-lock.json (npm ci);
#   2. builds into bench/work/ (never committed): the load generator, the C
#      engine client when libsbus is built, and Proton's example broker from
#      the source Debian ships in libqpid-proton11-dev-examples;
#   3. in a private network namespace when it can make one (loopback only, so
#      port 5671 is free whatever else runs on the machine), starts one
#      sbus-emulator (plain AMQP on a free port, TLS on 5671 for Microsoft's
#      Python SDK, WebSocket and secure WebSocket on free ports, control
#      surface) and the example broker;
#   4. bench.py runs the workloads, report.py writes bench/results/latest.*.
# Environment: BENCH_QUICK=1 (smoke run, < 1 minute), BENCH_N, BENCH_REPS,
# BENCH_CLIENTS=c,py,... , SBUS_EMULATOR (emulator binary), BENCH_NETNS=0 (stay in
# the machine's network namespace).
set -Eeuo pipefail
trap 'echo "bench: run.sh stopped: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR
phase=setup
if [ "${1:-}" = "--measure" ]; then phase=measure; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
work=$here/work
mkdir -p "$work/bin" "$here/results"
py=/usr/bin/python3    # Debian's, for matplotlib; clients use the project's .venv
log() { echo "bench: $*"; }

setup() {
    # --- 1. dependencies ---------------------------------------------------------
    missing=()
    for p in $(sed 's/#.*//' "$here/DEPS"); do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! command -v npm >/dev/null; then
        log "installing npm"; sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
    fi
    if [ ! -d "$here/js/node_modules/@azure/service-bus" ] \
       || [ "$here/js/package-lock.json" -nt "$here/js/node_modules/.package-lock.json" ]; then
        log "npm ci (Microsoft's JS SDK, pinned by bench/js/package-lock.json)"
        (cd "$here/js" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) \
            || log "npm ci failed: the JS client will be reported n/a"
    fi
    
    # --- 2. tools ------------------------------------------------------------------
    cc=${CC:-cc}
    "$cc" -O2 -g -Wall -Wextra -o "$work/bin/loadgen" "$here/c/loadgen.c" -lqpid-proton -lcrypto
    
    ex=/usr/share/proton/examples/c
    rm -f "$work/proton.reason"
    if [ -f "$ex/broker.c" ]; then
        # Built as Debian ships it, warnings silenced: it is their code, measured, not ours.
        "$cc" -O2 -g -w -I"$ex" -o "$work/bin/proton-broker" "$ex/broker.c" -lqpid-proton -lpthread \
            2>"$work/proton-build.log" || echo "the example broker did not build (bench/work/proton-build.log)" >"$work/proton.reason"
    else
        echo "$ex/broker.c missing (libqpid-proton11-dev-examples)" >"$work/proton.reason"
    fi
    
    rm -f "$work/bin/sbbench" "$work/sbbench.reason"
    libs=$(find "$build/core" -maxdepth 2 -name 'libsbus*.a' 2>/dev/null | sort || true)
    if [ -z "$libs" ]; then
        echo "libsbus not built ($build/core/libsbus*.a missing)" >"$work/sbbench.reason"
    elif ! "$cc" -O2 -g -Wall -Wextra -I"$top/core/include" -o "$work/bin/sbbench" "$here/c/sbbench.c" \
            -Wl,--start-group $libs -Wl,--end-group -lqpid-proton -lssl -lcrypto -lm \
            2>"$work/sbbench-build.log"; then
        echo "bench/c/sbbench.c did not link against libsbus: $(grep -m1 -E 'error|undefined' "$work/sbbench-build.log" | cut -c1-200)" >"$work/sbbench.reason"
    fi
}

measure() {
    # --- 3. the brokers ---------------------------------------------------------------
    emu_pid="" proton_pid=""
    cleanup() {
        # Only the two processes this script started, by pid.
        if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
        if [ -n "$proton_pid" ]; then kill "$proton_pid" 2>/dev/null || true; wait "$proton_pid" 2>/dev/null || true; fi
        return 0
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    
    # wait_line FILE PATTERN PID: waits up to 10 s for PATTERN in FILE while PID lives.
    wait_line() {
        for _ in $(seq 200); do
            grep -q "$2" "$1" 2>/dev/null && return 0
            kill -0 "$3" 2>/dev/null || return 1
            sleep 0.05
        done
        return 1
    }
    
    emu=${SBUS_EMULATOR:-$build/emulator/sbus-emulator}
    export EMU_REASON="" EMU_AMQP_PORT="" EMU_AMQPS_PORT="" EMU_WS_PORT="" EMU_WSS_PORT="" \
           EMU_CONTROL_PORT="" EMU_CA="" EMU_PID=""
    if [ -x "$emu" ]; then
        "$py" "$here/bench.py" config "$work/emulator.json"
        rm -rf "$work/emu-state"; mkdir -p "$work/emu-state"
        # Fallbacks: an emulator without WebSocket listeners, then one without TLS.
        for tls in "--amqps-port 5671 --ws-port 0 --wss-port 0" "--amqps-port 5671" ""; do
            # shellcheck disable=SC2086
            "$emu" --config "$work/emulator.json" --host 127.0.0.1 --amqp-port 0 $tls --control-port 0 \
                --state-dir "$work/emu-state" >"$work/emulator.out" 2>"$work/emulator.err" &
            emu_pid=$!
            if wait_line "$work/emulator.out" '^sbus-emulator ready' "$emu_pid"; then break; fi
            kill "$emu_pid" 2>/dev/null; wait "$emu_pid" 2>/dev/null || true; emu_pid=""
            EMU_REASON="did not start: $(tail -1 "$work/emulator.err" | cut -c1-200)"
            [ -n "$tls" ] && log "emulator with $tls did not start ($EMU_REASON); trying with less"
        done
        if [ -n "$emu_pid" ]; then
            ready=$(grep -m1 '^sbus-emulator ready' "$work/emulator.out")
            log "$ready"
            field() { grep -o " $1=[^ ]*" <<<"$ready" | head -1 | cut -d= -f2-; }
            EMU_PID=$emu_pid EMU_REASON=""
            EMU_AMQP_PORT=$(field amqp | sed 's/.*://')
            EMU_AMQPS_PORT=$(field amqps | sed 's/.*://')
            EMU_WS_PORT=$(field ws | sed 's/.*://')
            EMU_WSS_PORT=$(field wss | sed 's/.*://')
            EMU_CONTROL_PORT=$(field control | sed 's/.*://')
            EMU_CA=$(field ca)
        fi
    else
        EMU_REASON="$emu not built"
    fi
    log "emulator: ${EMU_AMQP_PORT:+amqp=$EMU_AMQP_PORT }${EMU_AMQPS_PORT:+amqps=$EMU_AMQPS_PORT }${EMU_WS_PORT:+ws=$EMU_WS_PORT }${EMU_WSS_PORT:+wss=$EMU_WSS_PORT }${EMU_REASON}"
    
    export PROTON_PID="" PROTON_PORT="" PROTON_REASON=""
    if [ -f "$work/proton.reason" ]; then
        PROTON_REASON=$(cat "$work/proton.reason")
    else
        # Run from bench/work so that it finds no certificates: it then listens for plain AMQP only.
        (cd "$work" && exec ./bin/proton-broker 127.0.0.1 0 >"$work/proton.out" 2>&1) &
        proton_pid=$!
        if wait_line "$work/proton.out" '^listening on [0-9]' "$proton_pid"; then
            PROTON_PID=$proton_pid
            PROTON_PORT=$(grep -m1 -o 'listening on [0-9]*' "$work/proton.out" | awk '{print $3}')
        else
            PROTON_REASON="did not start: $(tail -1 "$work/proton.out")"
        fi
    fi
    log "Proton example broker: ${PROTON_PORT:+port=$PROTON_PORT}${PROTON_REASON}"
    
    # --- 4. measure and report -------------------------------------------------------
    export BENCH_BUILD=$build
    "$py" "$here/bench.py" run
    name=$(cat "$work/result-name")
    "$py" "$here/report.py" "$here/results" "$name" >/dev/null
    log "wrote bench/results/$name.json, $name.md, $name.png"
}

if [ "$phase" = measure ]; then
    measure
    exit 0
fi
setup
if [ "${BENCH_NETNS:-1}" = 1 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
   && unshare -n ip link set lo up 2>/dev/null; then
    log "measuring in a private network namespace (loopback only)"
    unshare -n -- bash -c 'ip link set lo up && exec "$0" --measure "$1"' "$here/run.sh" "$build"
else
    "$here/run.sh" --measure "$build"
fi
