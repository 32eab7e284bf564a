-- A message sent from Lua comes back with its body, id and properties.
local sb = require "servicebus"
local helper = require "helper"

describe("round trip", function()
  local emu, client
  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("loads the module built for this interpreter", function()
    local want = os.getenv("SBUS_EXPECT_MODULE")
    if want then assert.are.equal(want, helper.module_path()) end
    assert.are.equal(jit and "luajit" or "5.4", sb._lua)
  end)

  it("sends and receives body and message_id", function()
    helper.drain(client, "test-queue")
    local sender = assert(client:sender("test-queue"))
    local id = helper.unique("rt")
    assert.is_true(sender:send({ body = "hello from Lua", message_id = id }))
    local rx = assert(client:receiver("test-queue"))
    local msgs, err, code = rx:receive(1, 10)
    assert(msgs, tostring(err) .. " " .. tostring(code))
    assert.are.equal(1, #msgs)
    local m = msgs[1]
    assert.are.equal("hello from Lua", m.body)
    assert.are.equal(id, m.message_id)
    assert.is_true(m:complete())
    assert.are.same({}, assert(rx:receive(1, 0.3)))
    sender:close()
    rx:close()
  end)

  it("sends a plain string as the body", function()
    local sender = assert(client:sender("test-queue"))
    assert.is_true(sender:send("just a string"))
    local rx = assert(client:receiver("test-queue", { mode = "receive_and_delete" }))
    local msgs = assert(rx:receive(1, 10))
    assert.are.equal("just a string", msgs[1].body)
    assert.are.equal("presettled", msgs[1].settle_state)
    rx:close()
    sender:close()
  end)

  it("keeps binary bodies intact", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local body = table.concat(bytes):rep(40) -- 10 KiB, every byte value
    local sender = assert(client:sender("test-queue"))
    assert.is_true(sender:send({ body = body }))
    local rx = assert(client:receiver("test-queue", { mode = "receive_and_delete" }))
    local msgs = assert(rx:receive(1, 10))
    assert.are.equal(#body, #msgs[1].body)
    assert.is_true(msgs[1].body == body)
    rx:close()
    sender:close()
  end)

  it("carries system and application properties", function()
    local sender = assert(client:sender("test-queue"))
    local id = helper.unique("props")
    assert.is_true(sender:send({
      body = "p", message_id = id, correlation_id = "corr-1",
      content_type = "text/plain", subject = "greeting", to = "someone",
      reply_to = "replies", time_to_live = 3600,
      properties = { origin = "lua", n = 42, pi = 3.5, yes = true },
    }))
    local rx = assert(client:receiver("test-queue"))
    local m = assert(rx:receive(1, 10))[1]
    assert.are.equal(id, m.message_id)
    assert.are.equal("corr-1", m.correlation_id)
    assert.are.equal("text/plain", m.content_type)
    assert.are.equal("greeting", m.subject)
    assert.are.equal("greeting", m.label)
    assert.are.equal("someone", m.to)
    assert.are.equal("replies", m.reply_to)
    assert.are.equal(3600, m.time_to_live)
    assert.are.same({ origin = "lua", n = 42, pi = 3.5, yes = true }, m.properties)
    assert.is_number(m.sequence_number)
    assert.is_number(m.enqueued_time)
    assert.is_true(math.abs(m.enqueued_time - os.time()) < 120)
    assert.is_number(m.locked_until)
    assert.is_true(m.locked_until >= m.enqueued_time)
    assert.are.equal(1, m.delivery_count == 0 and 1 or m.delivery_count)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", m.lock_token)
    assert.are.equal("unsettled", m.settle_state)
    assert.is_true(m:complete())
    assert.are.equal("settled", m.settle_state)
    rx:close()
    sender:close()
  end)

  it("sends a list of messages in one call", function()
    helper.drain(client, "test-queue")
    local sender = assert(client:sender("test-queue"))
    assert.is_true(sender:send({ "one", "two", { body = "three" } }))
    local rx = assert(client:receiver("test-queue", { mode = "receive_and_delete" }))
    local got = {}
    while #got < 3 do
      local msgs = assert(rx:receive(10, 5))
      if #msgs == 0 then break end
      for _, m in ipairs(msgs) do got[#got + 1] = m.body end
    end
    assert.are.same({ "one", "two", "three" }, got)
    rx:close()
    sender:close()
  end)

  -- The module reuses the engine messages it builds for a send (a pool):
  -- nothing of one send may show up in the next.
  it("sends each message with only its own fields, send after send", function()
    helper.drain(client, "test-queue")
    local sender = assert(client:sender("test-queue"))
    local big = ("b"):rep(5000)
    local sends = {
      { body = "first", message_id = "id-1", correlation_id = "corr-1", content_type = "text/plain",
        subject = "subj-1", to = "to-1", reply_to = "reply-1", time_to_live = 42 },
      { body = "second" },
      { correlation_id = "corr-3" },                 -- no body
      { body = big, properties = { k = "v" } },
      { message_id = "id-5" },                       -- no body after a big one
      { body = big },
      { subject = "subj-7" },
    }
    for _, m in ipairs(sends) do assert.is_true(sender:send(m)) end
    -- and all at once, in one batch, then more than the pool keeps
    assert.is_true(sender:send(sends))
    local many = {}
    for i = 1, 150 do many[i] = { body = "m" .. i, message_id = "many-" .. i } end
    assert.is_true(sender:send(many))
    assert.is_true(sender:send({ "after-1", { body = "after-2" } }))
    local rx = assert(client:receiver("test-queue", { mode = "receive_and_delete" }))
    local got = {}
    while #got < 2 * #sends + 152 do
      local msgs = assert(rx:receive(200, 5))
      if #msgs == 0 then break end
      for _, m in ipairs(msgs) do got[#got + 1] = m end
    end
    assert.are.equal(2 * #sends + 152, #got)
    for round = 0, 1 do
      local g = function(i) return got[round * #sends + i] end
      assert.are.equal("first", g(1).body)
      assert.are.equal("corr-1", g(1).correlation_id)
      assert.are.equal(42, g(1).time_to_live)
      assert.are.equal("second", g(2).body)
      for _, f in ipairs({ "correlation_id", "content_type", "subject", "to", "reply_to" }) do
        assert.is_nil(g(2)[f], f)
      end
      assert.are_not.equal("id-1", g(2).message_id)
      assert.are_not.equal(42, g(2).time_to_live)
      assert.are.equal("", g(3).body)
      assert.are.equal("corr-3", g(3).correlation_id)
      assert.are.equal(big, g(4).body)
      assert.are.same({ k = "v" }, g(4).properties)
      assert.are.equal("", g(5).body)
      assert.are.equal("id-5", g(5).message_id)
      assert.is_nil(g(5).correlation_id)
      assert.are.same({}, g(5).properties)
      assert.are.equal(big, g(6).body)
      assert.are.equal("", g(7).body)
      assert.are.equal("subj-7", g(7).subject)
    end
    for i = 1, 150 do
      assert.are.equal("m" .. i, got[2 * #sends + i].body)
      assert.are.equal("many-" .. i, got[2 * #sends + i].message_id)
    end
    assert.are.equal("after-1", got[#got - 1].body)
    assert.are.equal("after-2", got[#got].body)
    assert.are_not.equal("many-1", got[#got].message_id)
    rx:close()
    sender:close()
  end)

  it("sends nothing of a list that failed half-way, and the next send is whole", function()
    helper.drain(client, "test-queue")
    local sender = assert(client:sender("test-queue"))
    local ok, err = pcall(sender.send, sender,
      { { body = "x", message_id = "half-1" }, { body = "y", nosuch = 1 } })
    assert.is_false(ok)
    assert.matches("unknown message field 'nosuch'", tostring(err))
    assert.is_true(sender:send({ { body = "z" } }))
    local rx = assert(client:receiver("test-queue", { mode = "receive_and_delete" }))
    local msgs = assert(rx:receive(10, 5))
    assert.are.equal(1, #msgs)
    assert.are.equal("z", msgs[1].body)
    assert.are_not.equal("half-1", msgs[1].message_id)
    assert.are.same({}, assert(rx:receive(10, 0.3)))
    rx:close()
    sender:close()
  end)
end)
