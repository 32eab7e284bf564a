-- Object lifetimes: __gc frees without I/O, parents outlive children,
-- messages outlive their receiver, <close> on Lua 5.4.
local sb = require "servicebus"
local helper = require "helper"

describe("lifecycle", function()
  local emu
  setup(function() emu = helper.start_emulator() end)
  teardown(function() if emu then emu:stop() end end)

  it("collects abandoned clients, senders and receivers", function()
    for _ = 1, 3 do
      local c = helper.client(emu)
      local s = assert(c:sender("queue.1"))
      local r = assert(c:receiver("queue.1"))
      assert(s:start_send("left pending")) -- an op nobody waits for
      local _ = r
    end
    collectgarbage()
    collectgarbage()
    -- and the emulator is still fine
    local c = helper.client(emu)
    helper.drain(c, "queue.1")
    c:close()
  end)

  it("keeps the client alive while a sender is referenced", function()
    local s
    do
      local c = helper.client(emu)
      s = assert(c:sender("queue.1"))
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(s:send("still connected"))
    s:close()
  end)

  it("keeps received messages readable after everything closed", function()
    local c = helper.client(emu)
    helper.drain(c, "queue.1")
    local s = assert(c:sender("queue.1"))
    assert(s:send({ body = "survivor", message_id = "surv" }))
    local r = assert(c:receiver("queue.1"))
    local m = assert(r:receive(1, 5))[1]
    r:close()
    local ok, err, code = m:complete()
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("closed", code)
    c:close()
    collectgarbage()
    assert.are.equal("survivor", m.body)
    assert.are.equal("surv", m.message_id)
  end)

  it("completes pending operations with 'closed' when the client closes", function()
    local c = helper.client(emu)
    helper.drain(c, "test-queue-2")
    local r = assert(c:receiver("test-queue-2"))
    local op = assert(r:start_receive(1, 30))
    assert.is_false(op.done)
    assert.is_true(c:close())
    assert.is_true(op.done)
    local msgs, err, code = op:result()
    assert.is_nil(msgs)
    assert.is_string(err)
    assert.are.equal("closed", code)
  end)

  it("cancels an operation", function()
    local c = helper.client(emu)
    helper.drain(c, "test-queue-2")
    local r = assert(c:receiver("test-queue-2"))
    local op = assert(r:start_receive(1, 30))
    assert.is_true(op:cancel())
    local msgs, _, code = op:wait(5)
    assert.is_nil(msgs)
    assert.are.equal("cancelled", code)
    c:close()
  end)

  it("times out a wait without losing the operation", function()
    local c = helper.client(emu)
    helper.drain(c, "test-queue-2")
    local r = assert(c:receiver("test-queue-2"))
    local op = assert(r:start_receive(1, 1.5))
    local res, _, code = op:wait(0.2)
    assert.is_nil(res)
    assert.are.equal("timeout", code)
    assert.are.same({}, op:wait())
    c:close()
  end)

  if _VERSION == "Lua 5.4" and not jit then
    it("closes with <close>", function()
      local chunk = assert(load([[
        local sb, helper, emu = ...
        local c <close> = helper.client(emu)
        local s <close> = assert(c:sender("queue.1"))
        assert(s:send("closing"))
        return c, s
      ]]))
      local c, s = chunk(sb, helper, emu)
      assert.is_true(s:is_closed())
      assert.is_true(c:is_closed())
    end)
  end
end)
