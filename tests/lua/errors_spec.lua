-- Runtime failures return nil, message, code; misuse raises.
local sb = require "servicebus"
local helper = require "helper"

local function auth_code(cs)
  -- The refusal may come at connect, at attach or at the first send,
  -- depending on when the engine puts the token: all are the same failure.
  local client, err, code = sb.from_connection_string(cs, { retry_total = 0 })
  if not client then return nil, err, code end
  local sender
  sender, err, code = client:sender("queue.1")
  if sender then
    local ok
    ok, err, code = sender:send("x")
    if ok then client:close(); return true end
  end
  client:close()
  return nil, err, code
end

describe("errors", function()
  local emu
  setup(function() emu = helper.start_emulator() end)
  teardown(function() if emu then emu:stop() end end)

  it("a wrong SAS key gives nil, msg, 'unauthorized'", function()
    local ok, err, code = auth_code(helper.connection_string(emu.port, "wrong-key"))
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("unauthorized", code)
    assert.are.equal(sb.codes.unauthorized, -21)
  end)

  it("a malformed connection string gives 'bad-connection-string'", function()
    local c, err, code = sb.from_connection_string("Endpoint=nonsense")
    assert.is_nil(c)
    assert.is_string(err)
    assert.are.equal("bad-connection-string", code)
  end)

  it("a refused connection gives 'connection'", function()
    -- a port that was free a moment ago: nobody listens there
    local c, err, code = sb.from_connection_string(helper.connection_string(1),
      { retry_total = 0, operation_timeout = 5 })
    assert.is_nil(c)
    assert.is_string(err)
    assert.are.equal("connection", code)
  end)

  it("an unknown queue gives 'not-found'", function()
    local client = helper.client(emu)
    local s, err, code = client:sender("no-such-queue")
    if s then s, err, code = s:send("x") end
    assert.is_nil(s)
    assert.is_string(err)
    assert.are.equal("not-found", code)
    client:close()
  end)

  it("wrong argument types raise", function()
    local client = helper.client(emu)
    local sender = assert(client:sender("queue.1"))
    assert.has_error(function() sender:send(42) end)
    assert.has_error(function() sender:send({ body = "x", no_such_field = 1 }) end)
    assert.has_error(function() sender:send({ body = "x", message_id = 7 }) end)
    assert.has_error(function() sender:send({ body = "x", properties = { t = print } }) end)
    assert.has_error(function() client:receiver("queue.1", { mode = "sometimes" }) end)
    assert.has_error(function() sb.from_connection_string(nil) end)
    sender:close()
    client:close()
  end)

  it("options of the wrong type raise, naming the option and the type", function()
    local cs = emu.connection_string
    local cases = {
      { { port = "5672" }, "option 'port' must be an integer" },
      { { port = 1.5 }, "option 'port' must be an integer" },
      { { retry_backoff = "1" }, "option 'retry_backoff' must be a number" },
      { { logging = 1 }, "option 'logging' must be a boolean" },
      { { user_agent = 5 }, "option 'user_agent' must be a string" },
    }
    for _, c in ipairs(cases) do
      local o = { connection_string = cs }
      for k, v in pairs(c[1]) do o[k] = v end
      local ok, err = pcall(sb.new, o)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[2], 1, true), tostring(err))
    end
    local client = helper.client(emu)
    assert.has_error(function() client:receiver("queue.1", { prefetch = "10" }) end,
                     "servicebus: option 'prefetch' must be an integer")
    client:close()
  end)

  it("closed objects raise", function()
    local client = helper.client(emu)
    local sender = assert(client:sender("queue.1"))
    local rx = assert(client:receiver("queue.1"))
    assert.is_true(sender:close())
    assert.is_true(sender:close()) -- closing twice is fine
    assert.has_error(function() sender:send("x") end)
    assert.is_true(client:close())
    assert.has_error(function() rx:receive(1, 0) end)
    assert.has_error(function() client:sender("queue.1") end)
    assert.is_true(client:close())
  end)

  it("settling twice gives 'already-settled'", function()
    local client = helper.client(emu)
    helper.drain(client, "queue.1")
    local sender = assert(client:sender("queue.1"))
    assert(sender:send("twice"))
    local rx = assert(client:receiver("queue.1"))
    local m = assert(rx:receive(1, 10))[1]
    assert.is_true(m:complete())
    local ok, err, code = m:complete()
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("already-settled", code)
    client:close()
  end)

  it("settling a receive_and_delete message is refused", function()
    local client = helper.client(emu)
    local sender = assert(client:sender("queue.1"))
    assert(sender:send("rad"))
    local rx = assert(client:receiver("queue.1", { mode = "receive_and_delete" }))
    local m = assert(rx:receive(1, 10))[1]
    local ok, _, code = m:complete()
    assert.is_nil(ok)
    assert.are.equal("invalid-state", code)
    client:close()
  end)
end)
