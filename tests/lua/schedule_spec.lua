-- Scheduled messages, cancellation, batches and peeking.
local sb = require "servicebus"
local helper = require "helper"

describe("sender extras", function()
  local emu, client, sender
  local Q = "queue.1"

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

  it("schedules messages and returns their sequence numbers", function()
    local when = sb.now() + 2
    local seqs, err, code = sender:schedule({ { body = "later", message_id = "s1" }, "later too" }, when)
    assert(seqs, tostring(err) .. " " .. tostring(code))
    assert.are.equal(2, #seqs)
    assert.is_number(seqs[1])
    local rx = assert(client:receiver(Q, { mode = "receive_and_delete" }))
    assert.are.same({}, assert(rx:receive(1, 0.5)))
    local got = {}
    local deadline = sb.monotonic() + 10
    while #got < 2 and sb.monotonic() < deadline do
      for _, m in ipairs(assert(rx:receive(2, 1))) do got[#got + 1] = m end
    end
    assert.are.equal(2, #got)
    assert.is_true(sb.now() >= when - 0.5)
    rx:close()
  end)

  it("cancels scheduled messages", function()
    local seqs = assert(sender:schedule("never", sb.now() + 2))
    assert.is_true(sender:cancel_scheduled(seqs))
    local rx = assert(client:receiver(Q, { mode = "receive_and_delete" }))
    assert.are.same({}, assert(rx:receive(1, 3)))
    rx:close()
  end)

  it("sends a batch built with a size limit", function()
    local batch = assert(sender:create_batch(2048))
    assert.are.equal(2048, batch:max_size())
    local n = 0
    while true do
      local ok, err, code = batch:add({ body = ("b"):rep(100), message_id = "b" .. n })
      if not ok then
        assert.are.equal("too-large", code)
        assert.is_string(err)
        break
      end
      n = n + 1
    end
    assert.is_true(n > 1)
    assert.are.equal(n, batch:count())
    assert.are.equal(n, #batch)
    assert.is_true(batch:size() <= 2048)
    assert.is_true(sender:send(batch))
    local rx = assert(client:receiver(Q, { mode = "receive_and_delete" }))
    local total = 0
    while total < n do
      local msgs = assert(rx:receive(n, 3))
      if #msgs == 0 then break end
      total = total + #msgs
    end
    assert.are.equal(n, total)
    rx:close()
  end)

  it("refuses a batch larger than the link's limit; defaults to it", function()
    assert.has_error(function() sender:create_batch(1024 * 1024 * 1024) end)
    local batch = assert(sender:create_batch())
    assert.are.equal(sender:max_message_size(), batch:max_size())
  end)

  it("a list that does not fit one transfer is 'too-large'", function()
    local big = {}
    for i = 1, 5 do big[i] = { body = ("z"):rep(100000) } end
    local ok, err, code = sender:send(big)
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("too-large", code)
  end)

  it("peeks without locking", function()
    assert(sender:send({ { body = "p1" }, { body = "p2" } }))
    local rx = assert(client:receiver(Q))
    local peeked = assert(rx:peek(5))
    assert.is_true(#peeked >= 1)
    assert.are.equal("p1", peeked[1].body)
    assert.are.equal("peeked", peeked[1].settle_state)
    assert.is_nil(peeked[1].lock_token)
    local ok, _, code = peeked[1]:complete()
    assert.is_nil(ok)
    assert.are.equal("invalid-state", code)
    -- still there to receive
    local msgs = assert(rx:receive(2, 3))
    assert.is_true(#msgs >= 1)
    for _, m in ipairs(msgs) do assert(m:complete()) end
    rx:close()
  end)

  it("peeks from a sequence number", function()
    assert(sender:send({ "a", "b", "c" }))
    local rx = assert(client:receiver(Q))
    local all = assert(rx:peek(3, 1))
    assert.are.equal(3, #all)
    local from2 = assert(rx:peek(3, all[2].sequence_number))
    assert.are.equal(all[2].sequence_number, from2[1].sequence_number)
    rx:close()
  end)

  it("reports the link's maximum message size", function()
    assert.is_true(sender:max_message_size() > 0)
  end)
end)
