-- servicebus.testing (bindings/lua/servicebus/testing.lua): the emulator as
-- a busted helper. Runs on Lua 5.4 and LuaJIT (tests/lua/run.sh).
local testing = require "servicebus.testing"
local sb = require "servicebus"

local function alive(pid)
  local a, _, c = os.execute("kill -0 " .. pid .. " 2>/dev/null")
  return a == true or a == 0 or (a == nil and c == 0)
end

describe("servicebus.testing", function()
  local emu, client
  setup(function()
    emu = testing.start()
    client = assert(sb.from_connection_string(emu.connection_string))
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("starts on free ports with the default entities", function()
    assert.truthy(emu.port and emu.port > 0)
    assert.truthy(emu.control)
    assert.are.equal(("localhost:%d"):format(emu.port), emu.namespace)
    assert.truthy(emu.connection_string:find("UseDevelopmentEmulator=true", 1, true))
    assert.are.same({ status = "healthy" }, assert(emu:health()))
    local all = assert(emu:entities())
    assert.truthy(all["queue.1"] and all["topic.1/Subscriptions/subscription.1"])
  end)

  it("creates a queue at run time that a client can use", function()
    local q = assert(emu:create_queue(nil, { max_delivery_count = 3 }))
    assert.truthy(q:match("^queue%-"))
    local sender = assert(client:sender(q))
    assert.is_true(sender:send({ body = "made at run time" }))
    sender:close()
    assert.are.equal(1, assert(emu:counts(q)).active)
    local rx = assert(client:receiver(q, { mode = "receive_and_delete" }))
    local msgs = assert(rx:receive(1, 10))
    rx:close()
    assert.are.equal("made at run time", msgs[1].body)
    assert.are.equal(0, assert(emu:counts(q)).total)
    assert.is_true(emu:delete(q))
  end)

  it("gives each name once and reports conflicts and unknown entities", function()
    local a, b = testing.unique_name("q"), testing.unique_name("q")
    assert.are_not.equal(a, b)
    assert(emu:create_queue(a))
    local ok, err, code = emu:create_queue(a)
    assert.is_nil(ok)
    assert.are.equal("conflict", code)
    assert.truthy(err:find("already exists", 1, true))
    assert.is_true(emu:delete(a))
    ok, err, code = emu:delete(a)
    assert.is_nil(ok)
    assert.are.equal("not-found", code)
    ok, err, code = emu:create_queue(nil, { LockDuration = "soon" })
    assert.is_nil(ok)
    assert.are.equal("bad-request", code)
    assert.truthy(err:find("LockDuration", 1, true))
    assert.has_error(function() emu:create_queue(nil, { lock_duraton = 5 }) end)
  end)

  it("creates topics and filtered subscriptions", function()
    local t = assert(emu:create_topic(nil, { "all" }))
    assert(emu:create_subscription(t, "red", { sql_filter = "color = 'red'" }))
    local sender = assert(client:sender(t))
    assert.is_true(sender:send({ body = "blue", application_properties = { color = "blue" } }))
    sender:close()
    assert.are.equal(1, assert(emu:counts(t .. "/Subscriptions/all")).active)
    assert.are.equal(0, assert(emu:counts(t .. "/Subscriptions/red")).active)
    assert.is_true(emu:delete(t .. "/Subscriptions/red"))
    assert.is_true(emu:delete(t))
    assert.is_nil((emu:counts(t)))
  end)

  it("advances the clock so that a lock expires", function()
    local q = assert(emu:create_queue(nil, { lock_duration = 30 }))
    local sender = assert(client:sender(q))
    assert.is_true(sender:send({ body = "locked" }))
    sender:close()
    local rx = assert(client:receiver(q))
    local first = assert(rx:receive(1, 10))[1]
    assert.are.equal(1, assert(emu:counts(q)).locked)
    local before = assert(emu:clock()).now_ms
    local after = assert(emu:advance(31))
    assert.truthy(after.now_ms >= before + 31000)
    assert.are.equal(0, assert(emu:counts(q)).locked)
    local again = assert(rx:receive(1, 10))[1]
    assert.are.equal(first.delivery_count + 1, again.delivery_count)
    assert.is_true(again:complete())
    rx:close()
    emu:delete(q)
  end)

  it("speaks to the control port without curl too (bash /dev/tcp)", function()
    testing.http_client = "bash"
    local ok, health = pcall(emu.health, emu)
    local q, err, code = emu:create_queue("made-with-bash")
    local again, _, code2 = emu:create_queue("made-with-bash")
    testing.http_client = nil
    assert.is_true(ok)
    assert.are.same({ status = "healthy" }, health)
    assert.are.equal("made-with-bash", q, tostring(err) .. " " .. tostring(code))
    assert.is_nil(again)
    assert.are.equal("conflict", code2)
    assert.is_true(emu:delete("made-with-bash"))
  end)

  it("injects faults", function()
    assert(emu:fail_next(1, "send", "amqp:not-allowed"))
    local q = assert(emu:create_queue())
    local sender = assert(client:sender(q))
    local ok = sender:send({ body = "refused" })
    assert.is_not_true(ok)
    assert(emu:reset_faults())
    sender:close()
    emu:delete(q)
  end)
end)

describe("servicebus.testing.start", function()
  it("uses a config table and its Manage policy for the connection string", function()
    local e = testing.start({ config = { UserConfig = { Namespaces = { {
      Name = "ns",
      SharedAccessPolicies = { { Name = "admin", Key = "YWRtaW4=", Rights = { "Manage" } } },
      Queues = { { Name = "orders" } },
    } } } } })
    assert.truthy(e.connection_string:find("SharedAccessKeyName=admin;SharedAccessKey=YWRtaW4=;", 1, true))
    local c = assert(sb.from_connection_string(e.connection_string))
    local s = assert(c:sender("orders"))
    assert.is_true(s:send("x"))
    s:close()
    c:close()
    assert.are.equal(1, assert(e:counts("orders")).active)
    local pid = e.pid
    e:stop()
    assert.is_false(alive(pid))
    e:stop() -- twice is harmless
  end)

  it("reads a Config.json file with comments, and its policies", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[{
      // Microsoft's format: comments allowed
      "UserConfig": { "Namespaces": [ { "Name": "ns", /* our addition: */
        "SharedAccessPolicies": [ { "Name": "ops", "Key": "b3Bz", "Rights": [ "Manage" ] } ],
        "Queues": [ { "Name": "from-file" } ] } ] } }]])
    f:close()
    local e = testing.start({ config = path })
    os.remove(path)
    assert.truthy(e.connection_string:find("SharedAccessKeyName=ops;SharedAccessKey=b3Bz;", 1, true))
    assert.truthy(assert(e:entities())["from-file"])
    local c = assert(sb.from_connection_string(e.connection_string))
    local s = assert(c:sender("from-file"))
    assert.is_true(s:send("x"))
    s:close()
    c:close()
    e:stop()
  end)

  it("leaves no emulator behind when the Lua process is killed", function()
    local lua = jit and "luajit" or "lua5.4"
    local code = 'package.path = ' .. ("%q"):format(package.path)
      .. '; local e = require("servicebus.testing").start(); print(e.pid); io.stdout:flush(); '
      .. 'while true do os.execute("sleep 1") end'
    local p = assert(io.popen(("%s -e %s & echo $!"):format(lua, ("%q"):format(code):gsub("\\\n", "\\n")), "r"))
    local parent = p:read("*l")
    local emu_pid = p:read("*l")
    assert.truthy(tonumber(parent) and tonumber(emu_pid))
    assert.is_true(alive(emu_pid))
    os.execute("kill -9 " .. parent)
    local gone = false
    for _ = 1, 100 do
      if not alive(emu_pid) then gone = true break end
      os.execute("sleep 0.1")
    end
    p:close()
    assert.is_true(gone, "the emulator outlived its parent")
  end)

  it("raises with the emulator's reason for a bad config", function()
    local ok, err = pcall(testing.start, { config = { UserConfig = { Namespaces = { {
      Name = "ns", Queues = { { Name = "q", Properties = { LockDuration = "1 minute" } } } } } } } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("LockDuration", 1, true))
    assert.truthy(tostring(err):find("1 minute", 1, true))
  end)

  it("raises for a missing config file and a missing binary", function()
    local ok, err = pcall(testing.start, { config = "/no/such/config.json" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("no such file", 1, true))
    ok, err = pcall(testing.start, { binary = "/no/such/sbus-emulator" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("/no/such/sbus-emulator", 1, true))
  end)

  it("round-trips JSON", function()
    local s = testing.json_encode({ a = { 1, 2.5, "é\n\"" }, b = testing.array(), c = false })
    assert.are.equal('{"a":[1,2.5,"é\\n\\""],"b":[],"c":false}', s)
    local v = testing.json_decode(s)
    assert.are.equal("é\n\"", v.a[3])
    assert.are.equal(2.5, v.a[2])
    assert.are.equal(false, v.c)
    assert.are.equal("é", testing.json_decode('"\\u00e9"'))
    assert.are.equal('{"a": "// kept", "b": 1 \n}',
                     testing.strip_json_comments('{"a": "// kept", /* gone */"b": 1 // gone\n}'))
  end)
end)
