-- Connection loss and service faults (emulator control surface). Mirrors
-- tests/python/test_reconnect.py.
local helper = require "helper"

describe("reconnect", function()
  local emu
  setup(function() emu = helper.start_emulator("--control-port 0") end)
  teardown(function() if emu then emu:stop() end end)

  it("sends and receives after the connections are dropped", function()
    local client = helper.client(emu)
    helper.drain(client, "test-queue")
    local s = assert(client:sender("test-queue"))
    local rx = assert(client:receiver("test-queue"))
    assert(s:send("before"))
    local m = assert(rx:receive(1, 5))[1]
    assert.are.equal("before", m.body)
    assert(m:complete())
    local status = emu:control("POST", "/faults", { drop_connections = true })
    assert.are.equal(200, status)
    local ok, err, code = s:send("after")
    assert(ok, tostring(err) .. " " .. tostring(code))
    local msgs
    msgs, err, code = rx:receive(1, 5)
    assert(msgs, tostring(err) .. " " .. tostring(code))
    assert.are.equal("after", msgs[1] and msgs[1].body)
    assert(msgs[1]:complete())
    client:close()
  end)

  it("retries a server-busy send or reports 'server-busy'", function()
    local client = helper.client(emu, { retry_total = 0 })
    local s = assert(client:sender("test-queue"))
    assert(s:send("warm up"))
    assert.are.equal(200, (emu:control("POST", "/faults", { fail_next = 1, op = "send", condition = "com.microsoft:server-busy" })))
    local ok, err, code = s:send("busy")
    assert.is_nil(ok)
    assert.is_string(err)
    assert.are.equal("server-busy", code)
    emu:control("POST", "/faults", { reset = true })
    client:close()

    local patient = helper.client(emu, { retry_total = 3, retry_backoff = 0.1 })
    s = assert(patient:sender("test-queue"))
    assert.are.equal(200, (emu:control("POST", "/faults", { fail_next = 1, op = "send", condition = "com.microsoft:server-busy" })))
    assert.is_true(s:send("busy but retried"))
    emu:control("POST", "/faults", { reset = true })
    helper.drain(patient, "test-queue")
    patient:close()
  end)

  it("reports a refused receiver attach", function()
    local client = helper.client(emu, { retry_total = 0 })
    assert.are.equal(200, (emu:control("POST", "/faults", { fail_next = 1, op = "receive", condition = "amqp:unauthorized-access" })))
    local rx, err, code = client:receiver("test-queue")
    if rx then rx, err, code = rx:receive(1, 1) end
    assert.is_nil(rx)
    assert.is_string(err)
    assert.are.equal("unauthorized", code)
    emu:control("POST", "/faults", { reset = true })
    client:close()
  end)
end)
