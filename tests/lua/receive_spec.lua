-- Receiving: empty queues, max_count, the iterator, prefetch.
local sb = require "servicebus"
local helper = require "helper"

describe("receive", function()
  local emu, client
  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("returns an empty table after max_wait on an empty queue", function()
    helper.drain(client, "test-queue-2")
    local rx = assert(client:receiver("test-queue-2"))
    local t0 = sb.monotonic()
    local msgs, err, code = rx:receive(5, 1)
    local dt = sb.monotonic() - t0
    assert(msgs, tostring(err) .. " " .. tostring(code))
    assert.are.same({}, msgs)
    assert.is_true(dt >= 0.9, "returned after " .. dt .. " s")
    assert.is_true(dt < 5, "returned after " .. dt .. " s")
    rx:close()
  end)

  it("counts max_wait from the call, however long the program was away", function()
    helper.drain(client, "test-queue-2")
    local rx = assert(client:receiver("test-queue-2"))
    -- busy outside the client for 0.4 s: the engine's clock is not moved
    local t = sb.monotonic()
    while sb.monotonic() - t < 0.4 do end
    local t0 = sb.monotonic()
    local msgs = assert(rx:receive(1, 0.3))
    local dt = sb.monotonic() - t0
    assert.are.same({}, msgs)
    assert.is_true(dt >= 0.25, "returned after " .. dt .. " s")
    rx:close()
  end)

  it("returns at most max_count messages", function()
    helper.drain(client, "test-queue-2")
    local sender = assert(client:sender("test-queue-2"))
    for i = 1, 5 do assert(sender:send("m" .. i)) end
    local rx = assert(client:receiver("test-queue-2", { mode = "receive_and_delete" }))
    local msgs = assert(rx:receive(3, 5))
    assert.is_true(#msgs >= 1 and #msgs <= 3)
    local total = #msgs
    while total < 5 do
      msgs = assert(rx:receive(3, 5))
      if #msgs == 0 then break end
      assert.is_true(#msgs <= 3)
      total = total + #msgs
    end
    assert.are.equal(5, total)
    rx:close()
    sender:close()
  end)

  it("iterates with messages(max_wait) until the queue stays empty", function()
    helper.drain(client, "test-queue-2")
    local sender = assert(client:sender("test-queue-2"))
    assert(sender:send({ "a", "b", "c" }))
    local rx = assert(client:receiver("test-queue-2"))
    local bodies = {}
    for msg in rx:messages(1) do
      bodies[#bodies + 1] = msg.body
      assert(msg:complete())
    end
    assert.are.same({ "a", "b", "c" }, bodies)
    rx:close()
    sender:close()
  end)

  it("receives with prefetch", function()
    helper.drain(client, "test-queue-2")
    local sender = assert(client:sender("test-queue-2"))
    for i = 1, 10 do assert(sender:send("p" .. i)) end
    local rx = assert(client:receiver("test-queue-2", { prefetch = 20 }))
    local got = 0
    while got < 10 do
      local msgs = assert(rx:receive(10, 5))
      if #msgs == 0 then break end
      for _, m in ipairs(msgs) do assert(m:complete()); got = got + 1 end
    end
    assert.are.equal(10, got)
    rx:close()
    sender:close()
  end)

  it("validates max_count", function()
    local rx = assert(client:receiver("test-queue-2"))
    assert.has_error(function() rx:receive(0, 1) end)
    assert.has_error(function() rx:receive(-3, 1) end)
    assert.has_error(function() rx:receive("ten", 1) end)
    rx:close()
  end)

  it("aliases the Python names", function()
    local rx = assert(client:get_queue_receiver("test-queue-2"))
    assert.are.equal(rx.receive, rx.receive_messages)
    rx:close()
  end)

  -- On LuaJIT the client steps the GC for the memory received messages
  -- hold in the engine; a program that stopped the GC keeps it stopped.
  it("leaves a stopped GC stopped while it receives and settles", function()
    helper.drain(client, "test-queue-2")
    local sender = assert(client:sender("test-queue-2"))
    local list = {}
    for i = 1, 40 do list[i] = { body = ("g"):rep(4000) } end
    assert.is_true(sender:send(list))
    collectgarbage("stop")
    local ok, err = pcall(function()
      local rx = assert(client:receiver("test-queue-2", { prefetch = 40 }))
      local got = 0
      while got < 40 do
        local msgs = assert(rx:receive(40, 5))
        if #msgs == 0 then break end
        for _, m in ipairs(msgs) do assert.is_true(m:complete()) end
        got = got + #msgs
      end
      assert.are.equal(40, got)
      assert.are.same({}, assert(rx:receive(1, 0.1)))
      assert.is_false(collectgarbage("isrunning"))
      rx:close()
    end)
    collectgarbage("restart")
    assert(ok, err)
    sender:close()
  end)
end)
