-- Reliability and security of the Lua binding (docs/reliability.md): the key
-- scenarios of tests/reliability/*.py where the Lua API allows them. Plain
-- Lua blocks, so connections are cut by tests/reliability/relay.py running as
-- a process beside busted. Runs on Lua 5.4 and LuaJIT (run.sh).
local testing = require "servicebus.testing"
local sb = require "servicebus"

local dir = os.getenv("SBUS_RELIABILITY_DIR") or "tests/reliability"
local ROOT_KEY, SENDER_KEY, LISTENER_KEY = "SAS_KEY_VALUE", "c2VuZGVyLWtleQ==", "bGlzdGVuZXIta2V5"

-- a relay process in front of the emulator; cuts every connection every `every` s
local function start_relay(emu, every, target_file)
  local cmd = string.format("python3 %s/relay.py --target 127.0.0.1:%d --cut-every %s %s </dev/zero 2>/dev/null",
    dir, emu.port, tostring(every or 0), target_file and ("--target-file " .. target_file) or "")
  -- </dev/zero: stdin never reaches EOF; the relay is stopped with kill
  local f = assert(io.popen(cmd, "r"))
  local line = f:read("*l") or ""
  local pid, port = line:match("relay pid=(%d+) port=(%d+)")
  assert(pid, "relay did not start: " .. line)
  return { pid = pid, port = tonumber(port), stop = function() os.execute("kill " .. pid); f:close() end }
end

local function relayed(emu, port)
  return (emu.connection_string:gsub("Endpoint=sb://[^:;/]+:%d+", "Endpoint=sb://127.0.0.1:" .. port))
end

local function receive_one(rx, wait)
  for _ = 1, wait or 10 do
    local msgs, err, code = rx:receive(1, 1)
    assert(msgs, tostring(err) .. " " .. tostring(code))
    if msgs[1] then return msgs[1] end
  end
  error("no message arrived")
end

describe("reliability (Lua)", function()
  local emu
  setup(function() emu = testing.start{ config = dir .. "/config.json" } end)
  teardown(function() if emu then emu:stop() end end)
  after_each(function() emu:reset_faults() end)

  it("loses nothing while the connection is cut every 2 s", function()
    local n = tonumber(os.getenv("SBUS_LUA_CUT_N") or "600")
    local q = assert(emu:create_queue(nil, { lock_duration = 5, max_delivery_count = 100 }))
    local relay = start_relay(emu, 2)
    local ok, err = pcall(function()
      local client = assert(sb.from_connection_string(relayed(emu, relay.port)))
      local s = assert(client:sender(q))
      local rx = assert(client:receiver(q))
      local sent, seen, errors, settle_fail = {}, {}, {}, {}
      local t0 = sb.monotonic()
      local next_id = 0
      -- interleave: send a batch of 10, receive what is there, settle it;
      -- spread over >= 14 s so that the run spans 7+ cuts
      while sb.monotonic() - t0 < 120 do
        if next_id < n and sb.monotonic() - t0 >= 14 * next_id / n then
          local batch = {}
          for i = next_id, math.min(n, next_id + 10) - 1 do
            batch[#batch + 1] = sb.message{ body = tostring(i), message_id = tostring(i) }
          end
          local okk, e, code = s:send(batch)
          if okk then
            for i = next_id, next_id + #batch - 1 do sent[tostring(i)] = true end
          else
            errors[#errors + 1] = "send: " .. tostring(code)
          end
          next_id = next_id + #batch
        end
        local msgs, e, code = rx:receive(50, 0.05)
        if not msgs then
          errors[#errors + 1] = "receive: " .. tostring(code)
        else
          for _, m in ipairs(msgs) do
            seen[m.message_id] = (seen[m.message_id] or 0) + 1
            local okk, _, scode = m:complete()
            if not okk then settle_fail[#settle_fail + 1] = scode end
          end
        end
        if next_id >= n then
          local all = true
          for id in pairs(sent) do if not seen[id] then all = false; break end end
          if all and #msgs == 0 and emu:counts(q).total == 0 then break end
        end
      end
      local missing = 0
      for id in pairs(sent) do if not seen[id] then missing = missing + 1 end end
      local dups = 0
      for _, k in pairs(seen) do dups = dups + k - 1 end
      print(string.format("\nFIGURES lua cut-every-2s: n=%d elapsed=%.1fs missing=%d duplicates=%d settle_failures=%d errors=%d (%s)",
        n, sb.monotonic() - t0, missing, dups, #settle_fail, #errors, table.concat(errors, ",")))
      assert.are.equal(0, missing)
      assert.are.equal(0, emu:counts(q).total)
      -- a settlement fails only because its lock went with a cut link
      for _, code in ipairs(settle_fail) do assert.are.equal("lock-lost", code) end
      -- no send or receive failed: each cut connection had done useful work,
      -- so the engine reconnects without counting it against retry_total
      -- (bug 1 in docs/reliability.md, fixed in the engine)
      assert.are.same({}, errors)
      client:close()
    end)
    relay.stop()
    assert(ok, err)
  end)

  it("carries on when the emulator is killed and restarted, and reports what was in flight", function()
    local first = testing.start{ config = dir .. "/config.json" }
    local target_file = os.tmpname()
    local relay = start_relay(first, 0, target_file)
    local second
    local ok, err = pcall(function()
      local client = assert(sb.from_connection_string(relayed(first, relay.port)))
      local s, rx = assert(client:sender("other")), assert(client:receiver("other"))
      local batch = {}
      for i = 1, 20 do batch[i] = "before-" .. i end
      assert(s:send(batch))
      local held = {}
      while #held < 10 do
        for _, m in ipairs(assert(rx:receive(10 - #held, 2))) do held[#held + 1] = m end
      end
      for i = 1, 5 do assert(held[i]:complete()) end
      os.execute("kill -9 " .. first.pid)
      second = testing.start{ config = dir .. "/config.json" }
      local f = assert(io.open(target_file, "w"))
      f:write("127.0.0.1:" .. second.port)
      f:close()
      os.execute("kill -USR2 " .. relay.pid)
      -- in flight: settling a message of the dead broker reports the lost lock
      for i = 6, 10 do
        local okk, _, code = held[i]:complete()
        assert.is_nil(okk)
        assert.are.equal("lock-lost", code)
      end
      -- the same objects carry on (a first call may report the loss as "connection")
      local sent = false
      for _ = 1, 3 do
        local okk, _, code = s:send({ "after-1", "after-2", "after-3" })
        if okk then sent = true; break end
        assert.are.equal("connection", code)
      end
      assert.is_true(sent)
      local got = {}
      for _ = 1, 20 do
        local msgs = rx:receive(10, 1)
        for _, m in ipairs(msgs or {}) do got[#got + 1] = m.body; assert(m:complete()) end
        if #got >= 3 then break end
      end
      table.sort(got)
      assert.are.same({ "after-1", "after-2", "after-3" }, got)
      client:close()
    end)
    relay.stop()
    os.remove(target_file)
    if second then second:stop() end
    pcall(function() first:stop() end)
    assert(ok, err)
  end)

  it("absorbs a forced detach of idle links", function()
    local q = assert(emu:create_queue())
    local client = assert(sb.from_connection_string(emu.connection_string))
    local s, rx = assert(client:sender(q)), assert(client:receiver(q))
    assert(s:send("warm-up"))
    assert(receive_one(rx):complete())
    assert(emu:detach(q))
    assert(s:send("after detach"))
    local m = receive_one(rx)
    assert.are.equal("after detach", m.body)
    assert(m:complete())
    client:close()
  end)

  it("retries server-busy within retry_total, then reports it", function()
    local q = assert(emu:create_queue())
    local client = assert(sb.from_connection_string(emu.connection_string,
      { retry_total = 3, retry_backoff = 0.05, retry_backoff_max = 0.2 }))
    local s = assert(client:sender(q))
    assert(s:send("warm-up"))
    assert(emu:fail_next(2, "send", "com.microsoft:server-busy"))
    assert(s:send("busy twice"))
    assert.are.equal(0, emu:faults({}).fail_next)
    assert(emu:fail_next(10, "send", "com.microsoft:server-busy"))
    local ok, err, code = s:send("never")
    assert.is_nil(ok)
    assert.are.equal("server-busy", code)
    assert.are.equal(10 - 4, emu:faults({}).fail_next) -- one attempt + 3 retries
    assert(emu:reset_faults())
    assert(emu:fail_next(5, "send", "amqp:link:message-size-exceeded"))
    ok, err, code = s:send("refused")
    assert.is_nil(ok)
    assert.are.equal("message-size-exceeded", code)
    assert.are.equal(4, emu:faults({}).fail_next) -- not retried
    client:close()
  end)

  it("reports a lock lost to the clock as lock-lost", function()
    local q = assert(emu:create_queue(nil, { lock_duration = 30 }))
    local client = assert(sb.from_connection_string(emu.connection_string))
    local s, rx = assert(client:sender(q)), assert(client:receiver(q))
    assert(s:send("x"))
    local m = receive_one(rx)
    assert(emu:advance(31))
    local ok, _, code = m:complete()
    assert.is_nil(ok)
    assert.are.equal("lock-lost", code)
    local again = receive_one(rx)
    assert.are.equal(1, again.delivery_count)
    assert(again:complete())
    client:close()
  end)

  it("reports a lapsed session lock as session-lock-lost", function()
    local q = assert(emu:create_queue(nil, { requires_session = true, lock_duration = 30 }))
    local client = assert(sb.from_connection_string(emu.connection_string))
    local s = assert(client:sender(q))
    assert(s:send({ sb.message{ body = "a", session_id = "s1" }, sb.message{ body = "b", session_id = "s1" } }))
    local rx = assert(client:session_receiver(q, { session_id = "s1" }))
    assert(receive_one(rx):complete())
    assert(emu:advance(31))
    os.execute("sleep 0.3")
    local code
    for _ = 1, 5 do
      local msgs, _, c = rx:receive(1, 2)
      if not msgs then code = c; break end
      for _, m in ipairs(msgs) do
        local ok, _, sc = m:complete()
        if not ok then code = sc end
      end
      if code then break end
    end
    assert.are.equal("session-lock-lost", code)
    client:close()
  end)

  it("reports a lock on a cut link as lock-lost, and the receiver carries on", function()
    local q = assert(emu:create_queue(nil, { lock_duration = 30 }))
    local relay = start_relay(emu, 0)
    local ok, err = pcall(function()
      local client = assert(sb.from_connection_string(relayed(emu, relay.port)))
      local s, rx = assert(client:sender(q)), assert(client:receiver(q))
      assert(s:send("x"))
      local m = receive_one(rx)
      os.execute("kill -USR1 " .. relay.pid) -- cut every connection now
      os.execute("sleep 0.2")
      local okk, _, code = m:complete()
      assert.is_nil(okk)
      assert.are.equal("lock-lost", code)
      assert(emu:advance(31)) -- the lock held by the dead link expires
      local again = receive_one(rx) -- same receiver, reconnected by itself
      assert.are.equal(m.message_id, again.message_id)
      assert(again:complete())
      client:close()
    end)
    relay.stop()
    assert(ok, err)
  end)

  it("refuses a wrong key, a missing right, and never echoes the key", function()
    local q = assert(emu:create_queue())
    local bad = "d3Jvbmc="
    local client, err, code = sb.from_connection_string(emu:connection_string_for("RootManageSharedAccessKey", bad),
      { retry_total = 0 })
    local s
    if client then s, err, code = client:sender(q) end
    if s then s, err, code = s:send("x") end
    assert.is_nil(s)
    assert.are.equal("unauthorized", code)
    assert.is_nil(tostring(err):find(bad, 1, true))
    if client then client:close() end

    local sender_only = assert(sb.from_connection_string(emu:connection_string_for("sender", SENDER_KEY), { retry_total = 0 }))
    assert(assert(sender_only:sender(q)):send("ok"))
    local rx, rerr, rcode = sender_only:receiver(q)
    if rx then rx, rerr, rcode = rx:receive(1, 1) end
    assert.is_nil(rx)
    assert.is_nil(tostring(rerr):find(SENDER_KEY, 1, true))
    sender_only:close()
    assert.are.equal("forbidden", rcode)
  end)

  it("keeps keys and signatures out of the frame log", function()
    local q = assert(emu:create_queue())
    local lines = {}
    local client = assert(sb.from_connection_string(emu.connection_string,
      { logging = true, logger = function(line) lines[#lines + 1] = line end }))
    assert(assert(client:sender(q)):send("x"))
    client:close()
    assert.is_true(#lines > 0)
    local text = table.concat(lines, "\n")
    assert.is_nil(text:find(ROOT_KEY, 1, true))
    assert.is_nil(text:find("sig=[%w%%]+"))
    assert.is_nil(tostring(client):find(ROOT_KEY, 1, true))
  end)

  it("survives misuse: wrong types raise, runtime failures return nil, msg, code", function()
    local q = assert(emu:create_queue())
    local client = assert(sb.from_connection_string(emu.connection_string))
    local s, rx = assert(client:sender(q)), assert(client:receiver(q))
    assert.has_error(function() s:send(42) end)
    assert.has_error(function() s:send(function() end) end)
    assert.has_error(function() rx:receive("many") end)
    assert.has_error(function() sb.message{ message_id = string.rep("x", 129) } end)
    -- invalid UTF-8 in a string property and in the body: sent as bytes or refused, never a crash
    local okk = pcall(function() return s:send(sb.message{ body = "\xff\xfe", properties = { k = "\xc3\x28" } }) end)
    assert.is_boolean(okk)
    -- a body over the broker's limit
    local ok, err, code = s:send(string.rep("b", 300 * 1024))
    assert.is_nil(ok)
    assert.is_truthy(code == "too-large" or code == "message-size-exceeded", code)
    -- oversized properties
    ok, err, code = s:send(sb.message{ body = "x", properties = { big = string.rep("p", 300 * 1024) } })
    assert.is_nil(ok)
    assert.is_string(code)
    -- settle twice
    assert(s:send("twice"))
    local m
    for _ = 1, 10 do
      local msgs = assert(rx:receive(1, 1))
      for _, x in ipairs(msgs) do
        if x.body == "twice" then m = x else x:complete() end
      end
      if m then break end
    end
    assert(m, "the message did not arrive")
    assert(m:complete())
    ok, err, code = m:complete()
    assert.is_nil(ok)
    assert.are.equal("already-settled", code)
    -- closed objects
    s:close()
    assert.has_error(function() s:send("after close") end)
    client:close()
    assert.has_error(function() rx:receive(1, 0.1) end)
    ok, err, code = m:abandon()
    assert.is_nil(ok)
  end)

  it("keeps memory flat when senders and receivers are opened and closed", function()
    local function rss(pid)
      local f = io.open("/proc/" .. (pid or "self") .. "/statm")
      f:read("*n")
      local pages = f:read("*n")
      f:close()
      return pages * 4096 / 1e6
    end
    local q = assert(emu:create_queue())
    local client = assert(sb.from_connection_string(emu.connection_string))
    for _ = 1, 300 do assert(client:sender(q)):close(); assert(client:receiver(q)):close() end
    collectgarbage()
    local c0, e0 = rss(), rss(emu.pid)
    for _ = 1, 1500 do assert(client:sender(q)):close(); assert(client:receiver(q)):close() end
    collectgarbage()
    local grew_client, grew_emu = rss() - c0, rss(emu.pid) - e0
    client:close()
    -- 3000 links: about 7 MB on a side that never frees closed links
    print(string.format("\nFIGURES lua link churn: 3000 links opened and closed: client %+.1f MB, emulator %+.1f MB",
      grew_client, grew_emu))
    -- both sides free links detached on both ends (client since 3f8f16c;
    -- the emulator since its on_link_close calls pn_link_free)
    assert.is_true(grew_client < 2, string.format("client grew %+.1f MB", grew_client))
    assert.is_true(grew_emu < 2, string.format("emulator grew %+.1f MB", grew_emu))
  end)

  it("verifies TLS by default; verify = false is explicit", function()
    local tls = testing.start{ config = dir .. "/config.json", amqps_port = 0 }
    local warned
    local ok, err = pcall(function()
      local q = "other"
      local cred = { key_name = "RootManageSharedAccessKey", key = ROOT_KEY }
      local ns = "localhost:" .. tls.amqps_port
      -- no CA: the emulator's self-signed chain is refused
      local c, e, code = sb.from_namespace(ns, cred, { use_tls = true, retry_total = 0 })
      local s
      if c then s, e, code = c:sender(q) end
      if s then s, e, code = s:send("x") end
      assert.is_nil(s)
      assert.is_truthy(code == "tls" or code == "connection", tostring(code))
      if c then c:close() end
      -- its CA: works
      c = assert(sb.from_namespace(ns, cred, { use_tls = true, ca_file = tls.ca_file }))
      assert(assert(c:sender(q)):send("x"))
      c:close()
      -- verification off, asked for explicitly: works
      local lines = {}
      c = assert(sb.from_namespace(ns, cred, { use_tls = true, verify = false,
        logger = function(line) lines[#lines + 1] = line end }))
      assert(assert(c:sender(q)):send("x"))
      c:close()
      warned = table.concat(lines, "\n"):lower():find("verif")
    end)
    tls:stop()
    assert(ok, err)
    assert(warned, "verify = false must log a warning (the engine emits it on open)")
  end)
end)
