-- OpenResty: nginx from Debian (libnginx-mod-http-lua) with its own prefix,
-- config and free ports, driving resty.servicebus against the emulator.
-- Run by tests/lua/run.sh in its LuaJIT pass (nginx embeds LuaJIT).
local helper = require "helper"

local sh, free_port, http = helper.sh, helper.free_port, helper.http

local function urlencode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
%s
worker_processes 1;
daemon off;
master_process on;
pid %s/logs/nginx.pid;
error_log %s/logs/error.log info;
env SBUS_CONN;
env SBUS_CONN_TLS;
env SBUS_CONN_WSS;
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
  lua_shared_dict consumed 1m;
  lua_ssl_trusted_certificate %s;
  lua_ssl_verify_depth 3;
  init_worker_by_lua_block { require("app").init_worker() }
  server {
    listen 127.0.0.1:%d;
    location = /send     { content_by_lua_block { require("app").send() } }
    location = /receive  { content_by_lua_block { require("app").receive() } }
    location = /wsend    { content_by_lua_block { require("app").wsend() } }
    location = /consumed { content_by_lua_block { require("app").consumed() } }
    location = /ping     { content_by_lua_block { ngx.say("pong") } }
    location = /tls      { content_by_lua_block { require("app").tls() } }
    location = /slow     { content_by_lua_block { require("app").slow() } }
    location = /shared   { content_by_lua_block { require("app").shared() } }
  }
}
]]

describe("OpenResty", function()
  local emu, prefix, port, nginx_pid

  setup(function()
    assert(io.open("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
           "libnginx-mod-http-lua is not installed")
    emu = helper.start_emulator("--amqps-port 0 --wss-port 0 --control-port 0")
    emu:create_queue("ngx-short-lock", { LockDuration = "PT2S" })
    prefix = sh("mktemp -d"):gsub("%s+$", "")
    sh("mkdir -p " .. prefix .. "/logs " .. prefix .. "/tmp " .. prefix .. "/conf")
    port = free_port()
    local root = sh("cd " .. helper.root .. " && pwd"):gsub("%s+$", "")
    local build = os.getenv("SBUS_BUILD_DIR") or (root .. "/build")
    local user = sh("id -u"):match("^0") and "user root root;" or ""
    local conf = CONF:format(user, prefix, prefix, prefix, prefix, prefix, prefix, prefix,
                             root, root, build .. "/luajit", emu.ca_file, port)
    local f = assert(io.open(prefix .. "/conf/nginx.conf", "w"))
    f:write(conf)
    f:close()
    -- TLS: the amqps port, no UseDevelopmentEmulator (so the adapter does
    -- sslhandshake), verified against the emulator's generated CA
    local tls_cs = ("Endpoint=sb://localhost:%d;SharedAccessKeyName=RootManageSharedAccessKey;"
                    .. "SharedAccessKey=%s;"):format(emu.amqps_port, helper.key)
    local wss_cs = tls_cs:gsub("localhost:%d+", "localhost:" .. emu.ready:match(" wss=[^%s:]+:(%d+)"))
    local out = sh(("cd %s && SBUS_CONN='%s' SBUS_CONN_TLS='%s' SBUS_CONN_WSS='%s' nohup nginx -p %s -c conf/nginx.conf >%s/logs/stdout 2>&1 & echo $!")
                   :format(prefix, emu.connection_string, tls_cs, wss_cs, prefix, prefix))
    nginx_pid = assert(out:match("(%d+)"))
    for _ = 1, 100 do
      local body = http(port, "/ping", 1)
      if body == "pong" then break end
      sh("sleep 0.1")
    end
  end)

  teardown(function()
    if nginx_pid then
      -- graceful stop: the background timers see ngx.worker.exiting()
      sh("kill -QUIT " .. nginx_pid .. "; for i in $(seq 50); do kill -0 " .. nginx_pid
         .. " 2>/dev/null || break; sleep 0.1; done; kill " .. nginx_pid .. " 2>/dev/null")
    end
    if prefix then
      local log = sh("cat " .. prefix .. "/logs/error.log")
      if log:find("%[error%]") or log:find("%[alert%]") or log:find("%[crit%]") then
        io.stderr:write("--- nginx error.log\n", log, "\n")
      end
      sh("rm -rf " .. prefix)
    end
    if emu then emu:stop() end
  end)

  it("starts nginx with the Lua module", function()
    local body, code = http(port, "/ping")
    assert.are.equal(200, code)
    assert.are.equal("pong", body)
  end)

  it("sends from one request and receives in another", function()
    local id = helper.unique("ngx")
    local body, code = http(port, "/send?queue=test-queue-2&body=" .. urlencode("hello nginx") .. "&id=" .. id)
    assert.are.equal(200, code, body)
    body, code = http(port, "/receive?queue=test-queue-2&wait=5")
    assert.are.equal(200, code, body)
    assert.are.equal("hello nginx|" .. id .. "|openresty", body)
  end)

  it("stays responsive while a receive waits", function()
    -- a receive that waits 3 s on an empty queue, in the background; its
    -- answer lands in tmp (renamed there once complete)
    local tmp = os.tmpname()
    os.remove(tmp)
    sh(("(curl -s -m 20 'http://127.0.0.1:%d/receive?queue=queue.1&wait=3' >%s.part; mv %s.part %s) >/dev/null 2>&1 &")
       :format(port, tmp, tmp, tmp))
    sh("sleep 0.3")
    for _ = 1, 5 do
      local body, code = http(port, "/ping", 20)
      assert.are.equal(200, code)
      assert.are.equal("pong", body)
    end
    -- the pings were answered while the receive was still waiting
    local f = io.open(tmp)
    assert.is_nil(f, "the pings were answered only after the receive: the worker was blocked")
    local waited
    for _ = 1, 200 do
      f = io.open(tmp)
      if f then
        waited = f:read("*a")
        f:close()
        break
      end
      sh("sleep 0.1")
    end
    os.remove(tmp)
    assert.are.equal("none\n", waited)
  end)

  it("does TLS with sslhandshake (SNI, verified)", function()
    local body, code = http(port, "/tls?queue=test-queue-2")
    assert.are.equal(200, code, body)
    assert.are.equal("over tls|tls", body)
  end)

  it("a background consumer keeps a lock renewed while its handler runs", function()
    local body, code = http(port, "/send?queue=ngx-short-lock&body=slow&id=" .. helper.unique("slow"))
    assert.are.equal(200, code, body)
    local seen
    for _ = 1, 60 do
      seen = http(port, "/slow")
      if seen ~= "" then break end
      sh("sleep 0.2")
    end
    -- the first handler call ended, after 3.5 s with a 2 s lock
    assert.are.equal("slow:1", seen)
    -- and its completion went through: the queue empties within 3 s, less
    -- than a second handler call would take (a lost lock means redelivery)
    local status, text, total
    for _ = 1, 15 do
      status, text = emu:control("GET", "/entities")
      assert.are.equal(200, status)
      total = text:match('"ngx%-short%-lock"%s*:%s*{[^}]-"total"%s*:%s*(%d+)')
      if total == "0" then break end
      sh("sleep 0.2")
    end
    assert.are.equal("0", total, text)
  end)

  it("speaks AMQP over WebSocket over the cosocket's TLS (wss)", function()
    local body, code = http(port, "/tls?ws=1&queue=test-queue-2")
    assert.are.equal(200, code, body)
    assert.are.equal("over wss|tls", body)
  end)

  it("shares one connection between two light threads", function()
    local body, code = http(port, "/shared")
    assert.are.equal(200, code, body)
    -- one socket: neither thread broke the other's read
    assert.are.equal("A:none B:shared order:BA sockets:1", body)
  end)

  it("sends through the worker-level sender", function()
    local ids = {}
    for i = 1, 5 do
      ids[i] = helper.unique("w")
      local body, code = http(port, "/wsend?body=w" .. i .. "&id=" .. ids[i])
      assert.are.equal(200, code, body)
    end
    local got = {}
    for _ = 1, 5 do
      local body, code = http(port, "/receive?queue=test-queue&wait=5")
      assert.are.equal(200, code, body)
      got[#got + 1] = body:match("^([^|]*)")
    end
    table.sort(got)
    assert.are.same({ "w1", "w2", "w3", "w4", "w5" }, got)
  end)

  it("a background consumer settles messages sent by the Python module", function()
    local root = helper.root
    local py = root .. "/.venv/bin/python"
    local bodies = { "from-python-1", "from-python-2", "from-python-3" }
    local _, pyok = sh(py .. " -c 'import servicebus.aio' ")
    local script
    if pyok == 0 then
      script = ([[%s -c '
import asyncio, sys
from servicebus.aio import ServiceBusClient
from servicebus import Message
async def main():
    async with ServiceBusClient.from_connection_string(sys.argv[1]) as c:
        async with c.get_queue_sender("demo") as s:
            for b in sys.argv[2:]:
                await s.send_messages(Message(b.encode()))
asyncio.run(main())
' '%s' %s]]):format(py, emu.connection_string, table.concat(bodies, " "))
    else
      -- the Python module is not built here: send from plain Lua instead
      io.stderr:write("note: .venv has no servicebus module; sending from lua5.4\n")
      local tmp = os.tmpname()
      local f = assert(io.open(tmp, "w"))
      f:write([[
local sb = require "servicebus"
local c = assert(sb.from_connection_string(arg[1]))
local s = assert(c:sender("demo"))
for i = 2, #arg do assert(s:send(arg[i])) end
c:close()
]])
      f:close()
      script = ("LUA_CPATH_5_4='%s/lua54/?.so;;' lua5.4 %s '%s' %s; rm -f %s"):format(
        os.getenv("SBUS_BUILD_DIR") or (root .. "/build"), tmp,
        emu.connection_string, table.concat(bodies, " "), tmp)
    end
    local out, rc = sh(script)
    assert.are.equal(0, rc, out)
    local seen
    for _ = 1, 50 do
      seen = http(port, "/consumed")
      if seen and #seen >= #table.concat(bodies, ",") then break end
      sh("sleep 0.2")
    end
    -- each message once. The order is test_inmem's job
    -- (test_release_before_credit): a message that reaches the consumer
    -- after its receive call returned is released, and the engine writes
    -- that release ahead of the next receive's credit (1,3,2 was seen once
    -- in CI before it did); here timing decides too much to assert it
    local got = {}
    for b in (seen or ""):gmatch("[^,]+") do got[#got + 1] = b end
    table.sort(got)
    assert.are.equal(table.concat(bodies, ","), table.concat(got, ","))
    -- settled: nothing left in the queue
    local body = http(port, "/receive?queue=demo&wait=1")
    assert.are.equal("none", body)
  end)
end)
