-- A send built from strings and tables borrows the body strings instead of
-- copying them (sbus_message_set_body_ref): these specs drop every reference
-- to what was sent, make the collector free and reuse memory, and check that
-- the receiver gets exactly the bodies that were sent, on every path (a send
-- that fails half-way, a refused send, a closed client, pooled messages
-- reused by the next send, a list too long to borrow). Run under valgrind,
-- a body read after Lua freed it is an invalid read.
local helper = require "helper"

-- 1 KiB, different for every (tag, i), rebuilt for the comparison.
local function body(tag, i)
  return (("%s-%05d;"):format(tag, i)):rep(86):sub(1, 1024)
end

-- Fills freed memory with other bytes of the same sizes.
local function churn()
  for _ = 1, 3 do
    local junk = {}
    for k = 1, 600 do junk[k] = ("#%06d"):format(k):rep(147) end
    junk = nil -- luacheck: ignore
    collectgarbage("collect")
  end
end

local function receive_all(client, q, n)
  local rx = assert(client:receiver(q, { mode = "receive_and_delete" }))
  local got = {}
  while #got < n do
    local msgs = assert(rx:receive(300, 5))
    if #msgs == 0 then break end
    for _, m in ipairs(msgs) do got[#got + 1] = m.body end
  end
  assert.are.same({}, assert(rx:receive(10, 0.2)))
  rx:close()
  return got
end

describe("send bodies", function()
  local ctx = helper.emulator_and_client(setup, teardown)
  local qn = 0
  local function queue()
    qn = qn + 1
    return ctx.emu:create_queue(("send-body-%d"):format(qn))
  end

  it("survive every reference dropped before the send completes", function()
    local q = queue()
    local tx = assert(ctx.client:sender(q))
    local ops = {}
    do
      local list = {}
      for i = 1, 100 do list[i] = { body = body("t", i) } end
      ops[1] = assert(tx:start_send(list))
      local strings = {}
      for i = 1, 50 do strings[i] = body("s", i) end
      ops[2] = assert(tx:start_send(strings))
      ops[3] = assert(tx:start_send(body("one", 1)))
      ops[4] = assert(tx:start_send({ body = body("tbl", 1), subject = "x" }))
      list, strings = nil, nil -- luacheck: ignore
    end
    churn()
    for _, op in ipairs(ops) do assert.is_true(op:wait()) end
    churn()
    local got = receive_all(ctx.client, q, 152)
    assert.are.equal(152, #got)
    for i = 1, 100 do assert.are.equal(body("t", i), got[i]) end
    for i = 1, 50 do assert.are.equal(body("s", i), got[100 + i]) end
    assert.are.equal(body("one", 1), got[151])
    assert.are.equal(body("tbl", 1), got[152])
    tx:close()
  end)

  it("survive a finalizer that drops them during the send call", function()
    local q = queue()
    local tx = assert(ctx.client:sender(q))
    local list = {}
    for i = 1, 100 do list[i] = { body = body("f", i) } end
    -- garbage whose finalizers, whenever they run (maybe while the binding's
    -- own allocations in start_send step the collector), replace the bodies
    -- and collect (LuaJIT does; Lua 5.4 ignores a collection asked for in a
    -- finalizer): each message then carries the old body or the new one,
    -- never freed bytes
    for _ = 1, 50 do
      setmetatable({}, { __gc = function()
        if not list then return end
        for i = 1, #list do list[i] = { body = body("g", i) } end
        local junk = {}
        for k = 1, 50 do junk[k] = ("%07d"):format(k):rep(146) end
        junk = nil -- luacheck: ignore
        collectgarbage("collect")
      end })
    end
    local op = assert(tx:start_send(list))
    list = nil -- luacheck: ignore
    churn()
    assert.is_true(op:wait())
    local got = receive_all(ctx.client, q, 100)
    assert.are.equal(100, #got)
    for i = 1, 100 do
      if got[i] ~= body("g", i) then assert.are.equal(body("f", i), got[i]) end
    end
    tx:close()
  end)

  it("of a list that fails half-way are neither sent nor kept", function()
    local q = queue()
    local tx = assert(ctx.client:sender(q))
    local bad = { { body = body("b", 1) }, { body = body("b", 2) }, { bodyy = "typo" } }
    assert.has_error(function() tx:start_send(bad) end, "servicebus: unknown message field 'bodyy'")
    bad = nil -- luacheck: ignore
    churn()
    -- the pooled messages of the failed call are not reused with a stale body
    assert.is_true(tx:send({ { subject = "no body 1" }, { subject = "no body 2" } }))
    assert.is_true(tx:send({ { body = body("after", 1) }, { subject = "no body 3" } }))
    churn()
    local got = receive_all(ctx.client, q, 4)
    assert.are.same({ "", "", body("after", 1), "" }, got)
    tx:close()
  end)

  it("of a refused send are released and the next send is whole", function()
    local q = queue()
    local tx = assert(ctx.client:sender(q))
    local big = {}
    for i = 1, 5 do big[i] = { body = ("z"):rep(100000) .. i } end
    local ok, _, code = tx:send(big)
    assert.is_nil(ok)
    assert.are.equal("too-large", code)
    big = nil -- luacheck: ignore
    churn()
    assert.is_true(tx:send({ { body = body("ok", 1) }, { message_id = "m2" } }))
    assert.are.same({ body("ok", 1), "" }, receive_all(ctx.client, q, 2))
    tx:close()
  end)

  it("of a scheduled list survive every reference dropped", function()
    local q = queue()
    local tx = assert(ctx.client:sender(q))
    local op
    do
      local list = {}
      for i = 1, 20 do list[i] = { body = body("sch", i) } end
      op = assert(tx:start_schedule(list, os.time() - 1))
    end
    churn()
    local seqs = assert(op:wait())
    assert.are.equal(20, #seqs)
    local got = receive_all(ctx.client, q, 20)
    assert.are.equal(20, #got)
    for i = 1, 20 do assert.are.equal(body("sch", i), got[i]) end
    tx:close()
  end)

  it("of a list longer than the binding borrows are copied whole", function()
    local q = queue()
    local tx = assert(ctx.client:sender(q))
    local op
    do
      local list = {}
      for i = 1, 2100 do list[i] = ("long-%d"):format(i) end
      op = assert(tx:start_send(list))
    end
    churn()
    assert.is_true(op:wait())
    local got = receive_all(ctx.client, q, 2100)
    assert.are.equal(2100, #got)
    for i = 1, 2100, 97 do assert.are.equal(("long-%d"):format(i), got[i]) end
    assert.are.equal("long-2100", got[2100])
    tx:close()
  end)

  it("sent through a closed client are released", function()
    local c = helper.client(ctx.emu)
    local q = queue()
    local tx = assert(c:sender(q))
    c:close()
    assert.has_error(function()
      tx:send({ { body = body("closed", 1) }, { body = body("closed", 2) } })
    end, "servicebus: the sender is closed")
    churn()
    -- the pool serves the next client's send with no stale body
    local tx2 = assert(ctx.client:sender(q))
    assert.is_true(tx2:send({ { subject = "fresh" } }))
    assert.are.same({ "" }, receive_all(ctx.client, q, 1))
    tx2:close()
  end)
end)
