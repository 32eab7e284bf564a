-- OpenResty under faults (issue 9, docs/reliability.md): an nginx worker using
-- resty.servicebus talks to the emulator through a TCP relay
-- (tests/reliability/relay.py as a process: SIGUSR1 cuts every connection,
-- SIGUSR2 re-points it at a restarted broker). The spec cuts connections in
-- the middle of a stream, injects broker faults (POST /faults: server-busy,
-- forced detach, dropped connections) and kills and restarts the emulator,
-- and checks that requests keep succeeding once the fault is over, that
-- errors surface as nil, msg, code (two strings), and that the worker is
-- never blocked: /ping is served while another request waits out the fault.
-- Run by tests/lua/run.sh in its LuaJIT pass (nginx embeds LuaJIT).
local helper = require "helper"

-- a request: `limit` bounds it (a hang fails, slowness does not matter)
local sh, free_port = helper.sh, helper.free_port
local function http(port, path, limit) return helper.http(port, path, limit or 30) end

-- a request in the background; returns a function that waits for its answer
-- and one that tells whether it is still unanswered
local function http_bg(port, path, limit)
  local tmp = os.tmpname()
  os.remove(tmp)
  sh(("(curl -s -m %d -w '\\n%%{http_code}' 'http://127.0.0.1:%d%s' >%s.part; mv %s.part %s) >/dev/null 2>&1 &")
     :format(limit or 60, port, path, tmp, tmp, tmp))
  local function pending()
    local f = io.open(tmp)
    if f then f:close() end
    return f == nil
  end
  return function()
    for _ = 1, (limit or 60) * 10 + 50 do
      local f = io.open(tmp)
      local out = f and f:read("*a")
      if f then f:close() end
      if out then
        os.remove(tmp)
        local body, code = out:match("^(.*)\n(%d+)$")
        if body then body = body:gsub("\n$", "") end
        return body, tonumber(code)
      end
      sh("sleep 0.1")
    end
    os.remove(tmp)
    error("background request " .. path .. " never answered")
  end, pending
end

-- The one worker answers another request; with `pending` (of http_bg), it
-- did so while that request was still waiting out its fault: a worker
-- blocked by it would answer /ping only after it.
local function assert_worker_free(port, pending)
  local body, code = http(port, "/ping", 20)
  assert.are.equal(200, code, "the worker did not answer /ping")
  assert.are.equal("pong", body)
  if pending then assert.is_true(pending(), "/ping was answered only after the waiting request: the worker was blocked") end
end

-- an error answer of faults_app: ERR|<type of err>|<code>|<text>
local function assert_error_shape(body)
  local ty, code = body:match("^ERR|([^|]*)|([^|]*)|")
  assert(ty, "not an error answer: " .. tostring(body))
  assert.are.equal("string", ty, body)
  assert.is_truthy(code:match("^[a-z][a-z-]*$"), "the code is not a string code: " .. body)
  return code
end

-- /wsend until it succeeds (bounded); every failure on the way must be a
-- well-formed nil, msg, code. Returns how many attempts failed.
local function wsend_until_ok(port, body, tries)
  local failures = 0
  for _ = 1, tries or 10 do
    local out, code = http(port, "/wsend?body=" .. body, 30)
    if code == 200 then
      assert.are.equal("sent", out)
      return failures
    end
    assert.are.equal(502, code, out)
    assert_error_shape(out)
    failures = failures + 1
    sh("sleep 0.5")
  end
  error("/wsend never succeeded after the fault")
end

-- the background consumer got `body` at least once (bounded wait)
local function assert_consumed(port, body)
  local n
  for _ = 1, 150 do
    n = tonumber((http(port, "/seen?body=" .. body, 5)))
    if n and n >= 1 then return n end
    sh("sleep 0.1")
  end
  error("the consumer never got " .. body .. " (" .. tostring(n) .. ")")
end

local function start_relay(target_port, target_file)
  local f = assert(io.open(target_file, "w"))
  f:write("127.0.0.1:" .. target_port)
  f:close()
  local cmd = ("python3 %s/tests/reliability/relay.py --target 127.0.0.1:%d --target-file %s </dev/zero 2>/dev/null")
    :format(helper.root, target_port, target_file)
  -- </dev/zero: stdin never reaches EOF; the relay is stopped with kill
  local p = assert(io.popen(cmd, "r"))
  local line = p:read("*l") or ""
  local pid, port = line:match("relay pid=(%d+) port=(%d+)")
  assert(pid, "relay did not start: " .. line)
  return { pid = pid, port = tonumber(port), file = target_file,
           cut = function() sh("kill -USR1 " .. pid) end,
           retarget = function(p2)
             local g = assert(io.open(target_file, "w"))
             g:write("127.0.0.1:" .. p2)
             g:close()
             sh("kill -USR2 " .. pid)
           end,
           stop = function() sh("kill " .. pid); p:close(); os.remove(target_file) end }
end

local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
%s
worker_processes 1;
daemon off;
master_process on;
pid %s/logs/nginx.pid;
error_log %s/logs/error.log warn;
env SBUS_CONN;
events { worker_connections 256; }
http {
  access_log off;
  lua_socket_log_errors off;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  fastcgi_temp_path %s/tmp/fastcgi;
  uwsgi_temp_path %s/tmp/uwsgi;
  scgi_temp_path %s/tmp/scgi;
  lua_package_path "%s/bindings/lua/?.lua;%s/tests/openresty/?.lua;;";
  lua_package_cpath "%s/?.so;;";
  lua_shared_dict faults 1m;
  init_worker_by_lua_block { require("faults_app").init_worker() }
  server {
    listen 127.0.0.1:%d;
    location / { content_by_lua_block {
      local app = require "faults_app"
      local f = app[ngx.var.uri:sub(2)]
      if not f or ngx.var.uri == "/init_worker" then return ngx.exit(404) end
      f()
    } }
  }
}
]]

describe("OpenResty under faults", function()
  local emu, relay, prefix, port, nginx_pid

  setup(function()
    assert(io.open("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
           "libnginx-mod-http-lua is not installed")
    emu = helper.start_emulator("--control-port 0")
    relay = start_relay(emu.port, os.tmpname())
    prefix = sh("mktemp -d"):gsub("%s+$", "")
    sh("mkdir -p " .. prefix .. "/logs " .. prefix .. "/tmp " .. prefix .. "/conf")
    port = free_port()
    local root = sh("cd " .. helper.root .. " && pwd"):gsub("%s+$", "")
    local build = os.getenv("SBUS_BUILD_DIR") or (root .. "/build")
    local user = sh("id -u"):match("^0") and "user root root;" or ""
    local conf = CONF:format(user, prefix, prefix, prefix, prefix, prefix, prefix, prefix,
                             root, root, build .. "/luajit", port)
    local f = assert(io.open(prefix .. "/conf/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local relayed = helper.connection_string(relay.port)
    local out = sh(("cd %s && SBUS_CONN='%s' nohup nginx -p %s -c conf/nginx.conf >%s/logs/stdout 2>&1 & echo $!")
                   :format(prefix, relayed, prefix, prefix))
    nginx_pid = assert(out:match("(%d+)"))
    for _ = 1, 100 do
      if http(port, "/ping", 1) == "pong" then break end
      sh("sleep 0.1")
    end
  end)

  teardown(function()
    if nginx_pid then
      sh("kill -QUIT " .. nginx_pid .. "; for i in $(seq 50); do kill -0 " .. nginx_pid
         .. " 2>/dev/null || break; sleep 0.1; done; kill " .. nginx_pid .. " 2>/dev/null")
    end
    if relay then relay.stop() end
    if prefix then sh("rm -rf " .. prefix) end
    if emu then emu:stop() end
  end)

  it("serves through the relay before any fault", function()
    assert_worker_free(port)
    local out, code = http(port, "/send?queue=test-queue&body=calm")
    assert.are.equal(200, code, out)
    assert.are.equal("calm", (http(port, "/receive?queue=test-queue&wait=5")))
    assert.are.equal(0, wsend_until_ok(port, "calm-w", 1))
    assert_consumed(port, "calm-w")
  end)

  it("finishes a stream whose connection is cut twice in the middle, while the worker serves others", function()
    -- 30 sends paced 0.07 s on one connection: over 2 s, cut at 0.7 s and 1.4 s
    local wait, pending = http_bg(port, "/stream?queue=test-queue&n=30&pace=0.07&tag=cut", 90)
    for _ = 1, 2 do
      sh("sleep 0.7")
      relay.cut()
      assert_worker_free(port, pending)
    end
    local out, code = wait()
    print("\nFIGURES openresty stream cut twice: " .. tostring(out))
    assert.are.equal(200, code, out)
    local sent, got, missing, errors, bad, connects =
      out:match("^sent=(%d+) got=(%d+) missing=(%d+) dups=%d+ errors=(%S*) bad=(%d+) connects=(%d+)$")
    assert(sent, out)
    -- the stream's own connection was cut (it dialled again), nothing it
    -- sent was lost, and every error was a well-formed code
    assert.is_true(tonumber(connects) >= 2, out)
    assert.are.equal("0", missing, out)
    assert.are.equal("0", bad, out)
    assert.is_true(tonumber(got) >= tonumber(sent), out)
    for e in errors:gmatch("[^,]+") do
      -- only a completion whose lock went with the cut link may fail; sends
      -- and receives are carried over the cuts by the engine
      assert.are.equal("complete:lock-lost", e, out)
    end
    -- the worker's long-lived sender and consumer were cut too: they carry on
    wsend_until_ok(port, "after-cut")
    assert_consumed(port, "after-cut")
  end)

  it("retries server-busy with backoff without blocking the worker, and reports it as nil, msg, code past retry_total", function()
    -- 2 refusals, then accepted (busy=1: 3 retries, 0.3 s then 0.6 s backoff)
    assert.are.equal(200, (emu:control("POST", "/faults", { fail_next = 2, op = "send", condition = "com.microsoft:server-busy" })))
    local wait = http_bg(port, "/send?busy=1&queue=test-queue&body=busy-twice", 60)
    sh("sleep 0.15")
    assert_worker_free(port)
    local out, code = wait()
    assert.are.equal(200, code, out)
    assert.are.equal("sent", out)
    local _, state = emu:control("POST", "/faults", {})
    assert.are.equal("0", state:match('"fail_next"%s*:%s*(%d+)'), state)
    -- enqueued exactly once
    assert.are.equal("busy-twice", (http(port, "/receive?queue=test-queue&wait=5")))
    assert.are.equal("none", (http(port, "/receive?queue=test-queue&wait=0.5")))

    -- refused more often than 1 + retry_total attempts: the error surfaces
    assert.are.equal(200, (emu:control("POST", "/faults", { fail_next = 10, op = "send", condition = "com.microsoft:server-busy" })))
    local pending
    wait, pending = http_bg(port, "/send?busy=1&queue=test-queue&body=never", 60)
    sh("sleep 0.15")
    assert_worker_free(port, pending) -- while the send waits out 2.1 s of backoff
    out, code = wait()
    emu:control("POST", "/faults", { reset = true })
    assert.are.equal(502, code, out)
    assert.are.equal("server-busy", assert_error_shape(out))
    assert.are.equal("none", (http(port, "/receive?queue=test-queue&wait=0.5")))
    -- and the next request works
    out, code = http(port, "/send?queue=test-queue&body=after-busy")
    assert.are.equal(200, code, out)
    assert.are.equal("after-busy", (http(port, "/receive?queue=test-queue&wait=5")))
  end)

  it("absorbs a forced detach of the worker's links", function()
    assert.are.equal(0, wsend_until_ok(port, "before-detach", 1))
    assert_consumed(port, "before-detach")
    local status, text = emu:control("POST", "/faults", { detach = "demo", condition = "amqp:link:detach-forced" })
    assert.are.equal(200, status, text)
    assert_worker_free(port)
    -- the engine re-attaches by itself: no error reaches the request
    assert.are.equal(0, wsend_until_ok(port, "after-detach", 1))
    assert_consumed(port, "after-detach")
  end)

  it("absorbs dropped connections", function()
    local status, text = emu:control("POST", "/faults", { drop_connections = true })
    assert.are.equal(200, status, text)
    assert_worker_free(port)
    wsend_until_ok(port, "after-drop")
    assert_consumed(port, "after-drop")
    local out, code = http(port, "/send?queue=test-queue&body=drop-req")
    assert.are.equal(200, code, out)
    assert.are.equal("drop-req", (http(port, "/receive?queue=test-queue&wait=5")))
  end)

  it("recovers when the emulator is killed and restarted, serving other requests meanwhile", function()
    sh("kill -9 " .. emu.pid)
    -- a send while the broker is down: it fails as nil, msg, code or succeeds
    -- once the broker is back; either way its request ends
    local wait = http_bg(port, "/wsend?body=during-restart", 60)
    sh("sleep 0.5")
    assert_worker_free(port)
    local out, code = http(port, "/send?queue=test-queue&body=down", 30)
    assert.are.equal(502, code, out)
    assert_error_shape(out)
    assert_worker_free(port)
    local old = emu
    emu = helper.start_emulator("--control-port 0")
    pcall(function() old:stop() end)
    relay.retarget(emu.port)
    out, code = wait()
    print("\nFIGURES openresty send while the broker restarts: " .. tostring(out))
    if code ~= 200 then assert_error_shape(out) end
    -- after recovery everything works again, per request and long-lived
    wsend_until_ok(port, "after-restart")
    assert_consumed(port, "after-restart")
    out, code = http(port, "/send?queue=test-queue&body=restarted")
    assert.are.equal(200, code, out)
    assert.are.equal("restarted", (http(port, "/receive?queue=test-queue&wait=5")))
  end)

  it("logged no Lua error, alert or crash in the worker", function()
    local log = sh("cat " .. prefix .. "/logs/error.log")
    for _, bad in ipairs({ "%[alert%]", "%[crit%]", "%[emerg%]", "runtime error", "thread aborted",
                           "pump thread failed", "servicebus consumer handler" }) do
      assert.is_nil(log:find(bad), "nginx error.log has " .. bad .. ":\n" .. log)
    end
  end)
end)
