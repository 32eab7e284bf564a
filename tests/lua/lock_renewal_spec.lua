-- Automatic lock renewal for messages and sessions (engine timers).
local sb = require "servicebus"
local helper = require "helper"

describe("automatic lock renewal", function()
  local emu, client
  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("registers a message and stops when it is settled", function()
    helper.drain(client, "test-queue")
    local s = assert(client:sender("test-queue"))
    assert(s:send("renew me"))
    local rx = assert(client:receiver("test-queue"))
    local m = assert(rx:receive(1, 5))[1]
    local failed
    assert.is_true(m:auto_renew(30, function(msg, err, code) failed = code end))
    assert.is_true(m:stop_auto_renew())
    local ok, _, code = m:stop_auto_renew()
    assert.is_nil(ok)
    assert.are.equal("absent", code)
    assert.is_true(m:auto_renew(30))
    assert.is_true(m:complete())
    assert.is_nil(failed)
    rx:close()
  end)

  it("refuses renewal of a receive_and_delete message", function()
    local s = assert(client:sender("test-queue"))
    assert(s:send("no lock"))
    local rx = assert(client:receiver("test-queue", { mode = "receive_and_delete" }))
    local m = assert(rx:receive(1, 5))[1]
    local ok, err, code = m:renew_lock()
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("invalid-state", code)
    rx:close()
  end)

  it("keeps a session lock renewed", function()
    local sid = helper.unique("auto")
    local s = assert(client:sender("session-queue"))
    assert(s:send({ body = "x", session_id = sid }))
    local rx = assert(client:session_receiver("session-queue", sid))
    assert.is_true(rx:auto_renew(30, function() end))
    for m in rx:messages(0.5) do assert(m:complete()) end
    rx:close()
  end)
end)
