-- Settlement: complete, abandon, defer, dead-letter, lock renewal.
local sb = require "servicebus"
local helper = require "helper"

describe("settlement", function()
  local emu, client, sender
  local Q = "test-queue"

  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
    sender = assert(client:sender(Q))
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)
  before_each(function() helper.drain(client, Q) end)

  local function send_one(body)
    local id = helper.unique("st")
    assert(sender:send({ body = body or "x", message_id = id }))
    return id
  end

  it("complete removes the message", function()
    send_one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    assert.is_true(m:complete())
    assert.are.same({}, assert(rx:receive(1, 0.5)))
    rx:close()
  end)

  it("abandon makes it available again with a higher delivery count", function()
    local id = send_one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    local count = m.delivery_count
    assert.is_true(m:abandon())
    local again = assert(rx:receive(1, 5))[1]
    assert.are.equal(id, again.message_id)
    assert.are.equal(count + 1, again.delivery_count)
    assert.is_true(again:complete())
    rx:close()
  end)

  it("defer hides it until received by sequence number", function()
    local id = send_one("deferred")
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    local seq = m.sequence_number
    assert.is_true(m:defer())
    assert.are.same({}, assert(rx:receive(1, 0.5)))
    local got = assert(rx:receive_deferred({ seq }))
    assert.are.equal(1, #got)
    assert.are.equal(id, got[1].message_id)
    assert.are.equal("deferred", got[1].state)
    assert.is_true(got[1]:complete())
    local none, err, code = rx:receive_deferred(seq)
    assert.is_true(none == nil and code == "message-not-found" or (none and #none == 0),
      tostring(err) .. " " .. tostring(code))
    rx:close()
  end)

  it("dead_letter moves it to the dead-letter queue with reason and description", function()
    local id = send_one("dead")
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    assert.is_true(m:dead_letter("testing", "dead-lettered by a Lua test"))
    rx:close()
    local dlq = assert(client:receiver(Q, { sub_queue = "dead_letter" }))
    local d = assert(dlq:receive(1, 5))[1]
    assert.is_truthy(d, "nothing in the dead-letter queue")
    assert.are.equal(id, d.message_id)
    assert.are.equal("testing", d.dead_letter_reason)
    assert.are.equal("dead-lettered by a Lua test", d.dead_letter_error_description)
    assert.is_true(d:complete())
    dlq:close()
  end)

  it("renew_lock extends locked_until", function()
    send_one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    local before = m.locked_until
    local t0 = sb.now()
    local until_, err, code = m:renew_lock()
    assert(until_, tostring(err) .. " " .. tostring(code))
    assert.is_number(until_)
    assert.is_true(until_ >= before)
    assert.is_true(until_ > t0)
    assert.are.equal(until_, m.locked_until)
    assert.is_true(m:complete())
    rx:close()
  end)

  it("settles through the start/poll form", function()
    send_one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    local op = assert(m:start_complete())
    assert.is_true(op:wait())
    assert.is_true(op.done)
    rx:close()
  end)
end)
