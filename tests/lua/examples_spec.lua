-- Every example in examples/lua runs against the emulator (with the module
-- of this interpreter) and prints what it promises.
local helper = require "helper"

local interp = jit and "luajit" or "lua5.4"

local function run(emu, script, args)
  local cmd = ("cd %s && SERVICEBUS_CONNECTION_STR='%s' %s examples/lua/%s %s 2>&1; echo \"@rc=$?\"")
              :format(helper.root, emu.connection_string, interp, script, args or "")
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)@rc=(%d+)%s*$")
  return body or out, tonumber(rc)
end

describe("examples/lua", function()
  local emu
  setup(function() emu = helper.start_emulator() end)
  teardown(function() if emu then emu:stop() end end)

  it("send_receive.lua", function()
    local out, rc = run(emu, "send_receive.lua", "queue.1")
    assert.are.equal(0, rc, out)
    assert.matches("sent 3 messages", out)
    assert.matches("received example%-3: hello #3", out)
  end)

  it("sessions.lua", function()
    local out, rc = run(emu, "sessions.lua", "session-queue")
    assert.are.equal(0, rc, out)
    assert.matches("processing step 2", out)
    assert.matches("state: step 2 done", out)
  end)

  it("luv_two_clients.lua", function()
    local out, rc = run(emu, "luv_two_clients.lua")
    assert.are.equal(0, rc, out)
    assert.matches("b: sent", out)
    assert.matches("a: got hello across the loop", out)
  end)
end)
