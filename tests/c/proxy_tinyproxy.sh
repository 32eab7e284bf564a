#!/bin/sh
# proxy_tinyproxy.sh - the CONNECT tunnel layer (core/src/proxy.c) through a
# real proxy: Debian's tinyproxy, started here on free loopback ports.
#
#   tests/c/proxy_tinyproxy.sh [PATH_TO_proxy_driver]
#
# Without a driver path it compiles tests/c/proxy_driver.c itself. Checks:
#   1. tinyproxy with basic auth: the right password tunnels to a local TCP
#      echo server, and tinyproxy's log shows the CONNECT (proof the bytes
#      went through it);
#   2. a wrong password fails with "proxy refused CONNECT: <status line>
#      (check the proxy user name and password)" - tinyproxy 1.11.1 answers
#      wrong credentials with "401 Unauthorized", missing ones with "407
#      Proxy Authentication Required" - and no credentials at all fails with
#      the 407 line and the hint that the proxy wants some;
#   3. tinyproxy without auth tunnels too.
# Only loopback addresses are used. Everything started is stopped on exit.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d /tmp/sbus-tinyproxy.XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

fail() { echo "FAIL: $*" >&2; [ -f "$work/auth.log" ] && tail -n 20 "$work/auth.log" >&2; exit 1; }

if ! command -v tinyproxy >/dev/null 2>&1; then
    apt-get install -y tinyproxy >/dev/null 2>&1 || fail "tinyproxy missing and could not be installed"
fi

driver=${1:-}
if [ -z "$driver" ]; then
    driver="$work/proxy_driver"
    cc -std=c11 -Wall -Wextra -I"$root/core/include" -I"$root/core/src" \
        "$here/proxy_driver.c" "$root/core/src/proxy.c" "$root/core/src/alloc.c" \
        -lcrypto -o "$driver" 2>"$work/cc.log" || { cat "$work/cc.log" >&2; fail "driver build"; }
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A TCP echo server on loopback; it writes its port to a file once bound.
python3 - "$work/echo.port" <<'EOF' &
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def serve(c):
    with c:
        while True:
            b = c.recv(4096)
            if not b:
                return
            c.sendall(b)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
pids="$pids $!"

# start_proxy NAME PORT [AUTH_LINE]
start_proxy() {
    cat >"$work/$1.conf" <<EOF
Port $2
Listen 127.0.0.1
Timeout 30
LogFile "$work/$1.log"
LogLevel Info
PidFile "$work/$1.pid"
MaxClients 8
Allow 127.0.0.1
${3:-}
EOF
    tinyproxy -d -c "$work/$1.conf" >"$work/$1.out" 2>&1 &
    pids="$pids $!"
}

wait_port() {
    i=0
    until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1).close()' "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 50 ] || fail "nothing listens on $1"; sleep 0.1
    done
}

i=0
until [ -f "$work/echo.port" ]; do i=$((i + 1)); [ $i -lt 50 ] || fail "echo server"; sleep 0.1; done
echo_port=$(cat "$work/echo.port")

auth_port=$(free_port)
start_proxy auth "$auth_port" "BasicAuth sbususer s3cret-pass"
open_port=$(free_port)
start_proxy open "$open_port"
wait_port "$auth_port"
wait_port "$open_port"

# 1. through the authenticating proxy
out=$("$driver" "$auth_port" 127.0.0.1 "$echo_port" sbususer s3cret-pass "AMQP over a tunnel") || fail "tunnel with auth: $out"
echo "$out" | grep -q "echo ok" || fail "tunnel with auth: $out"
grep -q "CONNECT 127.0.0.1:$echo_port" "$work/auth.log" || fail "the proxy log lacks the CONNECT"
echo "ok: tunnel through tinyproxy with basic auth ($out)"

# 2. refusals
set +e
out=$("$driver" "$auth_port" 127.0.0.1 "$echo_port" sbususer wrong "x"); rc=$?
set -e
[ $rc -eq 2 ] || fail "wrong password: rc $rc, $out"
echo "$out" | grep -Eq "^proxy refused CONNECT: HTTP/1.[01] (407 Proxy Authentication Required|401 Unauthorized) \(check the proxy user name and password\)$" \
    || fail "wrong password text: $out"
echo "ok: wrong password -> $out"
set +e
out=$("$driver" "$auth_port" 127.0.0.1 "$echo_port" - - "x"); rc=$?
set -e
[ $rc -eq 2 ] || fail "no credentials: rc $rc, $out"
echo "$out" | grep -q "407 Proxy Authentication Required (the proxy wants a user name and password)" \
    || fail "no credentials text: $out"
echo "ok: no credentials -> $out"

# 3. through the open proxy
out=$("$driver" "$open_port" 127.0.0.1 "$echo_port" - - "no auth needed") || fail "open proxy: $out"
grep -q "CONNECT 127.0.0.1:$echo_port" "$work/open.log" || fail "the open proxy log lacks the CONNECT"
echo "ok: tunnel through tinyproxy without auth ($out)"
echo "proxy_tinyproxy: all passed"
