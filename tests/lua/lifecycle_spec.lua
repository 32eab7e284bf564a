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

  it("shows an op's state, results and error as fields", function()
    local c = helper.client(emu)
    helper.drain(c, "queue.1")
    local s = assert(c:sender("queue.1"))
    local op = assert(s:start_send({ body = "op fields" }))
    assert.are.equal("send", op.what)
    assert.is_false(op.done)
    assert.is_false(op:is_done())
    assert.are.same({ nil, "send: pending", "pending" }, { op:result() })
    assert.is_true(op:wait())
    assert.is_true(op.done)
    assert.is_true(op:is_done())
    assert.is_true(op[1])
    assert.is_nil(op.error)
    assert.matches("servicebus.op %(send, done%)", tostring(op))
    assert.are.equal(1, select("#", op:wait())) -- exactly the result
    local r = assert(c:receiver("queue.1"))
    local rop = assert(r:start_receive(1, 5))
    local msgs = assert(rop:wait())
    assert.are.equal(msgs, rop[1])
    assert.are.equal("op fields", msgs[1].body)
    assert.is_true(msgs[1]:complete())
    -- a failure
    local fs, fop = assert(c:start_sender("no-such-queue"))
    local ok, err, code = fop:wait()
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.same({ nil, err, code }, { fop:result() })
    assert.are.same({ nil, err, code }, { fop[1], fop[2], fop[3] })
    assert.are.equal(code, fop.error.code)
    assert.are.equal(err, fop.error.message)
    assert.are.equal("not-found", code)
    fs:_free()
    assert.is_number(fop.error.errno)
    -- an op is no table: a method of another type refuses it
    assert.has_error(function() op.cancel({}) end)
    c:close()
  end)

  it("cancelling a completed op leaves the op that took its place alone", function()
    local c = helper.client(emu)
    helper.drain(c, "test-queue-2")
    local r = assert(c:receiver("test-queue-2"))
    local first = assert(r:start_receive(1, 0.1))
    assert.are.same({}, first:wait())
    local second = assert(r:start_receive(1, 30)) -- may reuse first's slot
    local ok, err, code = first:cancel()
    assert.is_nil(ok)
    assert.is_string(err)
    assert.is_string(code)
    assert.is_nil(first:set_timeout(0.01))
    assert.is_false(second.done)
    assert.is_true(second:cancel())
    local _, _, code2 = second:wait(5)
    assert.are.equal("cancelled", code2)
    c:close()
  end)

  it("collects a message whose completion is still in flight", function()
    local c = helper.client(emu)
    helper.drain(c, "queue.1")
    local s = assert(c:sender("queue.1"))
    assert(s:send({ { body = "a" }, { body = "b" } }))
    local r = assert(c:receiver("queue.1"))
    local msgs = assert(r:receive(2, 5))
    assert.are.equal(2, #msgs)
    local ops = {}
    for i = 1, #msgs do ops[i] = assert(msgs[i]:start_complete()) end
    msgs = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    for i = 1, #ops do assert.is_true(ops[i]:wait(5)) end
    assert.are.same({}, r:receive(2, 0.2))
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
