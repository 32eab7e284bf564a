-- Soak from Lua (issue 9; not part of make test): open and close senders,
-- receivers and session receivers, then pass messages through one receiver,
-- sampling this process's RSS. Run with tests/reliability/soak.sh, or:
--   LUA_CPATH="build/lua54/?.so;;" LUA_PATH="bindings/lua/?.lua;;" \
--     lua5.4 tests/reliability/lua/soak.lua [cycles=10000] [messages=1000000] [max_growth_mb=8]
local testing = require "servicebus.testing"
local sb = require "servicebus"

local cycles = tonumber(arg[1]) or 10000
local messages = tonumber(arg[2]) or 1000000
local max_growth = tonumber(arg[3]) or 8
local dir = os.getenv("SBUS_RELIABILITY_DIR") or "tests/reliability"
local interp = (jit and jit.version) or _VERSION

local function rss_mb(pid)
  local f = io.open("/proc/" .. (pid or "self") .. "/statm")
  local pages = f:read("*n"); pages = f:read("*n"); f:close()
  return pages * 4096 / 1e6
end

local function verdict(name, samples, unit, elapsed)
  local warm = samples[math.max(2, math.floor(#samples / 10) + 1)]
  local last = samples[#samples]
  local growth = last[2] - warm[2]
  local ok = growth <= max_growth
  print(string.format("FIGURES soak-lua-%s (%s): %d %s in %.0fs; client RSS %.1f MB after warm-up, %.1f MB at the end: %+.1f MB; emulator %.1f -> %.1f MB %s",
    name, interp, last[1], unit, elapsed, warm[2], last[2], growth, warm[3], last[3], ok and "FLAT" or "GROWS"))
  return ok
end

local emu = testing.start{ config = dir .. "/config.json" }
local ok = true
local client = assert(sb.from_connection_string(emu.connection_string))
local q = assert(emu:create_queue())
local sq = assert(emu:create_queue(nil, { requires_session = true }))

collectgarbage()
local samples, t0 = {}, sb.monotonic()
for i = 1, cycles do
  local s = assert(client:sender(q))
  if i % 100 == 1 then assert(s:send("x")) end
  s:close()
  local r = assert(client:receiver(q))
  if i % 100 == 1 then for _, m in ipairs(assert(r:receive(10, 0.1))) do assert(m:complete()) end end
  r:close()
  local sr = assert(client:session_receiver(sq, { session_id = "s" .. (i % 50) }))
  sr:close()
  if i % math.max(1, math.floor(cycles / 20)) == 0 or i == 1 then
    collectgarbage()
    samples[#samples + 1] = { i, rss_mb(), rss_mb(emu.pid) }
  end
end
ok = verdict("open-close", samples, "open/close cycles (x3 links)", sb.monotonic() - t0) and ok

samples, t0 = {}, sb.monotonic()
local s = assert(client:sender(q))
local rx = assert(client:receiver(q, { prefetch = 500 }))
local got, sent = 0, 0
while got < messages do
  if sent < messages and sent - got < 5000 then
    local batch = {}
    for i = 1, math.min(100, messages - sent) do batch[i] = "m" .. (sent + i) end
    assert(s:send(batch))
    sent = sent + #batch
  end
  local msgs = assert(rx:receive(500, 0.01))
  for _, m in ipairs(msgs) do assert(m:complete()) end
  got = got + #msgs
  if #samples == 0 or got >= samples[#samples][1] + math.floor(messages / 20) then
    collectgarbage()
    samples[#samples + 1] = { got, rss_mb(), rss_mb(emu.pid) }
  end
end
collectgarbage()
samples[#samples + 1] = { got, rss_mb(), rss_mb(emu.pid) }
local elapsed = sb.monotonic() - t0
print(string.format("FIGURES soak-lua-rate (%s): %.0f msg/s (PeekLock + complete, one receiver)", interp, got / elapsed))
ok = verdict("messages", samples, "messages", elapsed) and ok
client:close()
emu:stop()
os.exit(ok and 0 or 1)
