-- Transports: TLS done by the engine (CA file, verification, verify off),
-- AMQP over WebSockets (ws and wss) and an HTTP CONNECT proxy (Debian's
-- tinyproxy with basic auth). Mirrors tests/c/test_tls, test_websocket and
-- test_tunnel from Lua.
local sb = require "servicebus"
local helper = require "helper"

local function cs(port, extra)
  return ("Endpoint=sb://localhost:%d;SharedAccessKeyName=RootManageSharedAccessKey;"
          .. "SharedAccessKey=%s;%s"):format(port, helper.key, extra or "")
end

local function round_trip(client, queue)
  local s = assert(client:sender(queue))
  local id = helper.unique("tr")
  assert.is_true(s:send({ body = "through", message_id = id }))
  local rx = assert(client:receiver(queue, { mode = "receive_and_delete" }))
  local m = assert(rx:receive(1, 5))[1]
  assert.is_truthy(m, "nothing came back")
  assert.are.equal(id, m.message_id)
  client:close()
end

local sh = helper.sh

describe("transports", function()
  local emu
  setup(function()
    emu = helper.start_emulator("--amqps-port 0 --ws-port 0 --wss-port 0")
    emu.ws_port = tonumber(emu.ready:match(" ws=[^%s:]+:(%d+)"))
    emu.wss_port = tonumber(emu.ready:match(" wss=[^%s:]+:(%d+)"))
  end)
  teardown(function() if emu then emu:stop() end end)

  it("TLS verified against a CA file", function()
    assert.is_string(emu.ca_file)
    round_trip(assert(sb.from_connection_string(cs(emu.amqps_port), { ca_file = emu.ca_file })), "queue.1")
  end)

  it("TLS refuses a server the CA does not vouch for: 'tls'", function()
    local c, err, code = sb.from_connection_string(cs(emu.amqps_port), { retry_total = 0 })
    if c then c:close() end
    assert.is_nil(c)
    assert.is_string(err)
    assert.are.equal("tls", code)
  end)

  it("TLS with verification off", function()
    round_trip(assert(sb.from_connection_string(cs(emu.amqps_port), { verify = false })), "queue.1")
  end)

  it("AMQP over WebSocket (ws)", function()
    assert.is_number(emu.ws_port, emu.ready)
    round_trip(assert(sb.from_connection_string(cs(emu.ws_port, "UseDevelopmentEmulator=true;"),
                                                { transport = "websocket" })), "queue.1")
  end)

  it("AMQP over secure WebSocket (wss)", function()
    assert.is_number(emu.wss_port, emu.ready)
    round_trip(assert(sb.from_connection_string(cs(emu.wss_port),
                                                { transport = "websocket", ca_file = emu.ca_file })), "queue.1")
  end)

  it("through an HTTP CONNECT proxy with basic auth", function()
    local have = sh("command -v tinyproxy")
    assert(have:match("tinyproxy"), "tinyproxy is not installed (apt-get install tinyproxy)")
    local work = sh("mktemp -d"):gsub("%s+$", "")
    local port = tonumber((sh([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])))
    local f = assert(io.open(work .. "/tp.conf", "w"))
    f:write(([[
Port %d
Listen 127.0.0.1
Timeout 30
LogFile "%s/tp.log"
LogLevel Info
PidFile "%s/tp.pid"
MaxClients 8
Allow 127.0.0.1
BasicAuth luauser s3cret
]]):format(port, work, work))
    f:close()
    local out = sh(("env -u LD_PRELOAD tinyproxy -d -c %s/tp.conf >%s/tp.out 2>&1 & echo $!"):format(work, work))
    local pid = out:match("(%d+)")
    for _ = 1, 50 do
      local _, rc = sh(([[python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",%d),1).close()']]):format(port))
      if rc == 0 then break end
      sh("sleep 0.1")
    end
    local ok, err = pcall(function()
      round_trip(assert(sb.from_connection_string(cs(emu.amqps_port), {
        ca_file = emu.ca_file,
        http_proxy = { host = "127.0.0.1", port = port, username = "luauser", password = "s3cret" },
      })), "queue.1")
      local log = sh("cat " .. work .. "/tp.log")
      assert.matches("CONNECT", log)
      -- a wrong password is refused by the proxy
      local c, e, code = sb.from_connection_string(cs(emu.amqps_port), {
        ca_file = emu.ca_file, retry_total = 0,
        http_proxy = { host = "127.0.0.1", port = port, username = "luauser", password = "wrong" },
      })
      if c then c:close() end
      assert.is_nil(c)
      assert.is_string(e)
      assert.are.equal("proxy", code)
    end)
    if pid then sh("kill " .. pid) end
    sh("rm -rf " .. work)
    assert(ok, err)
  end)
end)
