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
end)
