-- A blocking receive sleeps in poll(2): waiting costs no CPU. Mirrors
-- tests/python/test_idle.py. Also: no object growth over many round trips
-- (tests/python/test_leaks.py).
local sb = require "servicebus"
local helper = require "helper"

describe("resources", function()
  local emu, client
  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("an idle receive uses almost no CPU", function()
    helper.drain(client, "test-queue-2")
    local rx = assert(client:receiver("test-queue-2"))
    local cpu0, t0 = os.clock(), sb.monotonic()
    assert.are.same({}, assert(rx:receive(1, 2)))
    local cpu, wall = os.clock() - cpu0, sb.monotonic() - t0
    assert.is_true(wall >= 1.9)
    assert.is_true(cpu < 0.1, ("%.3f s of CPU in %.1f s"):format(cpu, wall))
    rx:close()
  end)

  it("does not grow over 200 round trips", function()
    local s = assert(client:sender("test-queue"))
    local rx = assert(client:receiver("test-queue"))
    helper.drain(client, "test-queue")
    local function round(i)
      assert(s:send({ body = "r" .. i, message_id = "r" .. i, properties = { i = i } }))
      local m = assert(rx:receive(1, 5))[1]
      assert(m:complete())
    end
    for i = 1, 50 do round(i) end
    collectgarbage(); collectgarbage()
    local before = collectgarbage("count")
    for i = 51, 250 do round(i) end
    collectgarbage(); collectgarbage()
    local after = collectgarbage("count")
    assert.is_true(after - before < 64, ("grew by %.1f KiB"):format(after - before))
    rx:close()
    s:close()
  end)
end)
