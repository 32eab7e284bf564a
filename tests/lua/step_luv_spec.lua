-- The step API under a real event loop (lua-luv): two clients run
-- concurrently in one libuv loop; neither blocks the other.
local sb = require "servicebus"
local helper = require "helper"
local has_luv, uv = pcall(require, "luv")

describe("step API with luv", function()
  local emu
  setup(function() emu = helper.start_emulator() end)
  teardown(function() if emu then emu:stop() end end)

  it("exposes fd, events, timeout and step", function()
    local c = assert(sb.new({ connection_string = emu.connection_string }))
    local op = assert(c:start_open())
    local deadline = sb.monotonic() + 10
    while not op.done and sb.monotonic() < deadline do
      local fd, ev, t = c:fd(), c:events(), c:timeout()
      assert.is_true(fd == nil or math.type == nil or math.type(fd) == "integer")
      assert.is_true(ev == "" or ev == "r" or ev == "w" or ev == "rw")
      assert.is_true(t == nil or t >= 0)
      c:step()
    end
    assert.is_true(op.done)
    assert.is_true(op:result())
    assert.is_true(c:is_open())
    c:close()
  end)

  it("starting operations writes nothing until step(); events() asks for w meanwhile", function()
    local c = assert(sb.from_connection_string(emu.connection_string))
    local tx = assert(c:sender("queue.1"))
    local function settle() -- step until the engine has nothing to write
      for _ = 1, 100 do
        if c:events() == "r" then return end
        c:step()
      end
    end
    settle()
    assert.equal("r", c:events())
    local ops = {}
    for i = 1, 3 do ops[i] = assert(tx:start_send({ body = "step-" .. i })) end
    assert.equal("rw", c:events())     -- the three transfers wait in the engine
    local deadline = sb.monotonic() + 10
    while not (ops[1].done and ops[2].done and ops[3].done) and sb.monotonic() < deadline do
      c:step()
    end
    for i = 1, 3 do assert.is_true(ops[i]:result()) end
    settle()
    assert.equal("r", c:events())
    c:close()
  end)

  it("runs two clients concurrently in one luv loop", function()
    assert(has_luv, "lua-luv is not installed (apt-get install lua-luv)")
    local sbl = require "servicebus.luv"
    local loop = sbl.new()
    local t0 = uv.now()
    local events = {}
    local function note(what) events[#events + 1] = what; if os.getenv("SBUS_DEBUG") then io.stderr:write(("%.3f %s\n"):format((uv.hrtime()/1e9) % 1000, what)) end end

    local guard = uv.new_timer()
    local finished = 0
    local function finish()
      finished = finished + 1
      if finished == 2 then guard:stop(); guard:close() end
    end

    local c1, open1 = assert(loop:client(emu.connection_string))
    local c2, open2 = assert(loop:client(emu.connection_string))
    local marker = helper.unique("luv")

    -- task 1 on client 1: waits (up to 10 s) for a message that task 2 sends
    local got, waited
    loop:spawn(function(await)
      assert(await(open1))
      local rx = assert(await(loop:receiver(c1, "test-queue-2", { mode = "receive_and_delete" })))
      note("rx ready")
      local t = uv.now()
      local msgs = assert(await(rx:start_receive(1, 10)))
      waited = (uv.now() - t) / 1000
      got = msgs[1] and msgs[1].body
      note("received")
      assert(await(loop:close(c1)))
      finish()
    end)

    -- task 2 on client 2: sends after 0.5 s, then does more work meanwhile
    local sent_at
    loop:spawn(function(await)
      assert(await(open2))
      local tx = assert(await(loop:sender(c2, "test-queue-2")))
      assert(await(loop:sleep(0.5)))
      note("sending")
      assert(await(tx:start_send({ body = marker })))
      sent_at = uv.now()
      note("sent")
      -- a second round trip on client 2 while client 1 is still busy
      local rx2 = assert(await(loop:receiver(c2, "queue.1", { mode = "receive_and_delete" })))
      local empty = assert(await(rx2:start_receive(1, 0.2)))
      note("c2 more work " .. #empty)
      assert(await(loop:close(c2)))
      finish()
    end)

    guard:start(20000, 0, function() guard:close(); uv.stop() end)
    uv.run() -- returns when no handle is left: both clients closed
    assert.are.equal(2, finished)

    assert.are.equal(marker, got)
    assert.is_truthy(sent_at)
    assert.is_true(waited >= 0.3 and waited < 5, "waited " .. tostring(waited))
    assert.is_true((uv.now() - t0) / 1000 < 8)
    -- client 1 was waiting while client 2 connected, attached and sent
    local pos = {}
    for i, e in ipairs(events) do pos[e] = pos[e] or i end
    assert.is_true(pos["rx ready"] < pos["sent"])
    assert.is_true(pos["sending"] < pos["received"])
    assert.is_true(c1:is_closed() and c2:is_closed())
  end)
end)
