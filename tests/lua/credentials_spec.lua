-- Credentials other than the connection string: namespace + key, a ready
-- SAS token, a token provider function, and logging. Mirrors
-- tests/python/test_credentials.py, test_auth.py and test_logging.py.
local sb = require "servicebus"
local helper = require "helper"

describe("credentials and options", function()
  local emu, ns
  setup(function()
    emu = helper.start_emulator()
    ns = "localhost"
  end)
  teardown(function() if emu then emu:stop() end end)

  local function works(client)
    local s = assert(client:sender("queue.1"))
    assert.is_true(s:send("credential check"))
    helper.drain(client, "queue.1")
    client:close()
  end

  it("namespace + shared key", function()
    works(assert(sb.from_namespace(ns, { key_name = "RootManageSharedAccessKey", key = "SAS_KEY_VALUE" },
                                   { use_tls = false, port = emu.port })))
  end)

  it("a ready SAS token", function()
    local tok = assert(sb.sas_token("sb://localhost/", "RootManageSharedAccessKey", "SAS_KEY_VALUE", os.time() + 3600))
    works(assert(sb.from_namespace(ns, tok, { use_tls = false, port = emu.port })))
  end)

  it("a token provider function, called per audience", function()
    local audiences = {}
    local client = assert(sb.from_namespace(ns, function(audience)
      audiences[#audiences + 1] = audience
      local exp = os.time() + 3600
      return sb.sas_token(audience, "RootManageSharedAccessKey", "SAS_KEY_VALUE", exp), exp
    end, { use_tls = false, port = emu.port }))
    works(client)
    assert.is_true(#audiences >= 1)
    assert.matches("localhost", audiences[1])
  end)

  it("a failing token provider is 'unauthorized'", function()
    local client, err, code = sb.from_namespace(ns, function() error("vault unreachable") end,
                                                { use_tls = false, port = emu.port, retry_total = 0 })
    if client then
      local s
      s, err, code = client:sender("queue.1")
      if s then s, err, code = s:send("x") end
      client:close()
    end
    assert.is_string(err)
    assert.are.equal("unauthorized", code)
  end)

  it("a wrong key on receive is 'unauthorized'", function()
    local client, err, code = sb.from_connection_string(helper.connection_string(emu.port, "bad"), { retry_total = 0 })
    if client then
      local rx
      rx, err, code = client:receiver("queue.1")
      if rx then rx, err, code = rx:receive(1, 1) end
      client:close()
    end
    assert.is_string(err)
    assert.are.equal("unauthorized", code)
  end)

  it("logs AMQP frames to a logger when logging is on", function()
    local lines = {}
    local client = helper.client(emu, { logging = true, logger = function(l) lines[#lines + 1] = l end })
    local s = assert(client:sender("queue.1"))
    assert(s:send("traced"))
    client:close()
    assert.is_true(#lines > 3, #lines .. " lines")
    local joined = table.concat(lines, "\n")
    assert.matches("attach", joined)
    assert.is_nil(joined:find("SAS_KEY_VALUE", 1, true), "the key must never be logged")
  end)

  it("logs nothing by default", function()
    local lines = {}
    local client = helper.client(emu, { logger = function(l) lines[#lines + 1] = l end })
    assert(assert(client:sender("queue.1")):send("quiet"))
    helper.drain(client, "queue.1")
    client:close()
    assert.are.equal(0, #lines)
  end)
end)

describe("namespace with a port", function()
  local emu
  setup(function() emu = helper.start_emulator() end)
  teardown(function() if emu then emu:stop() end end)

  it("takes the port from host:port", function()
    local client, err, code = sb.from_namespace("localhost:" .. emu.port,
      { key_name = "RootManageSharedAccessKey", key = "SAS_KEY_VALUE" },
      { use_tls = false, retry_total = 0 })
    assert(client, tostring(err) .. " " .. tostring(code))
    client:close()
  end)
end)
