-- Message and session locks with a 3-second lock (queues created through
-- the emulator's control surface): expiry, renewal, automatic renewal and
-- its failure callback. Mirrors tests/python/test_lock_renewal.py.
local sb = require "servicebus"
local helper = require "helper"

local LOCK_S = 3

local function sleep(client, seconds)
  -- wait while the client keeps running its timers (renewals): a receive
  -- on an empty queue is a sleep that pumps the connection
  local rx = assert(client:receiver("test-queue-2", { mode = "receive_and_delete" }))
  local t = sb.monotonic() + seconds
  while sb.monotonic() < t do
    local got = assert(rx:receive(1, t - sb.monotonic()))
    assert.are.equal(0, #got, "test-queue-2 should stay empty")
  end
  rx:close()
end

describe("locks", function()
  local emu, client, Q, SQ
  setup(function()
    emu = helper.start_emulator("--control-port 0")
    Q = emu:create_queue("lua-short-lock", { LockDuration = "PT3S" })
    SQ = emu:create_queue("lua-short-lock-sessions", { LockDuration = "PT3S", RequiresSession = true })
    client = helper.client(emu)
    helper.drain(client, "test-queue-2")
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)
  before_each(function() helper.drain(client, Q) end)

  local function one(body)
    local s = assert(client:sender(Q))
    assert(s:send(body or "lock"))
    s:close()
  end

  it("renew_lock moves locked_until", function()
    one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    local first = m.locked_until
    sleep(client, 1)
    local renewed = assert(m:renew_lock())
    assert.is_true(renewed > first)
    assert.are.equal(renewed, m.locked_until)
    assert(m:complete())
    rx:close()
  end)

  it("settling after the lock expired gives 'lock-lost'", function()
    one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    sleep(client, LOCK_S + 1)
    local ok, err, code = m:renew_lock()
    assert.is_nil(ok)
    assert.are.equal("lock-lost", code)
    ok, err, code = m:complete()
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("lock-lost", code)
    local again = assert(rx:receive(1, 5))[1]
    assert.are.equal(m.delivery_count + 1, again.delivery_count)
    assert(again:complete())
    rx:close()
  end)

  it("auto_renew keeps the message locked", function()
    one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    local failures = {}
    assert(m:auto_renew(30, function(msg, err, code) failures[#failures + 1] = code end))
    sleep(client, 2 * LOCK_S + 1)
    assert.is_true(m:complete())
    assert.are.same({}, failures)
    rx:close()
  end)

  it("auto_renew calls back when renewal fails", function()
    one()
    local rx = assert(client:receiver(Q))
    local m = assert(rx:receive(1, 5))[1]
    sleep(client, LOCK_S + 0.5)
    -- another receiver takes the message once our lock lapsed
    local thief = assert(client:receiver(Q))
    local stolen = assert(thief:receive(1, 5))[1]
    assert.is_truthy(stolen)
    local seen
    assert(m:auto_renew(30, function(msg, err, code) seen = { msg, err, code } end))
    local deadline = sb.monotonic() + 10
    while not seen and sb.monotonic() < deadline do sleep(client, 0.2) end
    assert.is_truthy(seen, "the failure callback never ran")
    assert.are.equal(m, seen[1])
    assert.is_string(seen[2])
    assert.are.equal("lock-lost", seen[3])
    assert(stolen:complete())
    thief:close()
    rx:close()
  end)

  it("auto_renew keeps a session locked", function()
    local sid = helper.unique("lock")
    local s = assert(client:sender(SQ))
    assert(s:send({ body = "s", session_id = sid }))
    local rx = assert(client:session_receiver(SQ, sid))
    assert(rx:auto_renew(30))
    sleep(client, 2 * LOCK_S + 1)
    local m = assert(rx:receive(1, 5))[1]
    assert.is_truthy(m)
    assert.is_true(m:complete())
    rx:close()
  end)

  it("a lapsed session lock gives 'session-lock-lost'", function()
    local sid = helper.unique("lapse")
    local s = assert(client:sender(SQ))
    assert(s:send({ body = "s", session_id = sid }))
    local rx = assert(client:session_receiver(SQ, sid))
    local m = assert(rx:receive(1, 5))[1]
    sleep(client, LOCK_S + 1)
    local ok, _, code = m:complete()
    assert.is_nil(ok)
    assert.is_true(code == "session-lock-lost" or code == "lock-lost", code)
    rx:close()
    -- someone else can take the session now
    local again = assert(client:session_receiver(SQ, sid))
    for msg in again:messages(1) do assert(msg:complete()) end
    again:close()
  end)
end)
