-- Session receivers: a given session, the next available one, state and
-- the session lock.
local sb = require "servicebus"
local helper = require "helper"

describe("sessions", function()
  local emu, client, sender
  local Q = "session-queue"

  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
    sender = assert(client:sender(Q))
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("receives the messages of one session", function()
    local sid = helper.unique("s")
    assert(sender:send({ { body = "1", session_id = sid }, { body = "2", session_id = sid } }))
    local rx, err, code = client:session_receiver(Q, { session_id = sid })
    assert(rx, tostring(err) .. " " .. tostring(code))
    assert.are.equal(sid, rx:session_id())
    assert.is_number(rx:locked_until())
    local bodies = {}
    for m in rx:messages(1) do
      assert.are.equal(sid, m.session_id)
      bodies[#bodies + 1] = m.body
      assert(m:complete())
    end
    assert.are.same({ "1", "2" }, bodies)
    rx:close()
  end)

  it("takes the next available session", function()
    local sid = helper.unique("next")
    assert(sender:send({ body = "n", session_id = sid }))
    local rx = assert(client:session_receiver(Q, { session_wait = 5 }))
    assert.is_string(rx:session_id())
    for m in rx:messages(0.5) do assert(m:complete()) end
    rx:close()
  end)

  it("gets and sets the session state", function()
    local sid = helper.unique("state")
    assert(sender:send({ body = "s", session_id = sid }))
    local rx = assert(client:session_receiver(Q, sid))
    local state, err = rx:get_state()
    assert.is_nil(err)
    assert.is_nil(state)
    assert.is_true(rx:set_state("step-2\0binary"))
    assert.are.equal("step-2\0binary", rx:get_state())
    assert.is_true(rx:set_state(nil))
    for m in rx:messages(0.5) do assert(m:complete()) end
    rx:close()
  end)

  it("renews the session lock", function()
    local sid = helper.unique("lock")
    assert(sender:send({ body = "l", session_id = sid }))
    local rx = assert(client:session_receiver(Q, sid))
    local before = rx:locked_until()
    local after = assert(rx:renew_lock())
    assert.is_true(after >= before)
    assert.are.equal(after, rx:locked_until())
    for m in rx:messages(0.5) do assert(m:complete()) end
    rx:close()
  end)

  it("refuses a session another receiver holds", function()
    local sid = helper.unique("held")
    assert(sender:send({ body = "h", session_id = sid }))
    local rx1 = assert(client:session_receiver(Q, sid))
    local other = helper.client(emu)
    local rx2, err, code = other:session_receiver(Q, sid)
    assert.is_nil(rx2)
    assert.is_string(err)
    assert.are.equal("session-cannot-be-locked", code)
    other:close()
    for m in rx1:messages(0.5) do assert(m:complete()) end
    rx1:close()
  end)
end)
