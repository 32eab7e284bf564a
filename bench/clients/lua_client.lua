-- One benchmark workload with our Lua module (Lua 5.4 or LuaJIT), printed as
-- one JSON line, like bench/clients/py_client.py.
--
-- Usage: lua5.4|luajit lua_client.lua WORKLOAD QUEUE N
--   WORKLOAD  send_batch | send_single | recv_peeklock | recv_rad | latency | idle
-- Environment: SB_CONN, SB_CA (CA file for TLS), SB_TRANSPORT (amqp or websocket),
-- SB_LAT_RATE, SB_IDLE_S; LUA_CPATH finds servicebus.so.
--
-- The call pattern is the Python client's: one batch (or message) in flight
-- when sending, each awaited; receive up to 300 with prefetch 300, then all
-- completions started at once (msg:start_complete) and awaited together.
-- Wall time: CLOCK_MONOTONIC through LuaJIT's ffi, else now()
-- (1 ms resolution: Lua 5.4 latencies are quantised to 1 ms); CPU: os.clock(),
-- which is C clock(): user + sys CPU of the whole process on Linux; peak RSS: VmHWM.
local servicebus = require "servicebus"

local now, clock_res_ms = servicebus.monotonic, 1
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
      int clock_gettime(int clk, bench_timespec_t *ts);
    ]]
    local ts = ffi.new("bench_timespec_t")
    now = function()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
    end
    clock_res_ms = 0.001
  end
end

local workload, queue, n = arg[1], arg[2], tonumber(arg[3])
local BODY = string.rep("x", 1024)
local PREFETCH = 300

local function json_value(v)
  if type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', "'") .. '"'
  elseif type(v) == "boolean" then
    return tostring(v)
  elseif math.type and math.type(v) == "integer" then
    return tostring(v)
  end
  return string.format("%.9g", v)
end

local function emit(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = '"' .. k .. '":' .. json_value(v) end
  io.write("{", table.concat(parts, ","), "}\n")
  io.flush()
end

local function peak_rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or 0
end

local meter = {}
local function start() meter.t0, meter.c0 = now(), os.clock() end
local function stop() meter.seconds, meter.cpu = now() - meter.t0, os.clock() - meter.c0 end

-- Raises a runtime failure (nil, msg, code) as an error with its text.
local function must(ok, err, code, ...)
  if ok == nil then error(tostring(err) .. " (" .. tostring(code) .. ")", 2) end
  return ok, err, code, ...
end

local function send(client, per_call)
  local sender = must(client:sender(queue))
  must(sender:send({ body = BODY })) -- attach + warm-up, not counted
  start()
  local done = 0
  while done < n do
    local k = math.min(per_call, n - done)
    if per_call == 1 then
      must(sender:send({ body = BODY }))
    else
      local list = {}
      for i = 1, k do list[i] = { body = BODY } end
      must(sender:send(list))
    end
    done = done + k
  end
  stop()
  sender:close()
  return { n = n, extra_sent = 1 }
end

local function receive(client, peek)
  local rx = must(client:receiver(queue, {
    mode = peek and "peek_lock" or "receive_and_delete", prefetch = PREFETCH }))
  local got, started = 0, false
  while got < n do
    local msgs = must(rx:receive(PREFETCH, 20))
    if #msgs == 0 then error(("only %d of %d messages arrived (20 s without one)"):format(got, n)) end
    if not started then start(); started = true end
    if peek then
      local ops = {}
      for i = 1, #msgs do ops[i] = must(msgs[i]:start_complete()) end
      for i = 1, #ops do must(ops[i]:wait()) end
    end
    got = got + #msgs
  end
  stop()
  rx:close()
  return { n = got }
end

local function latency(client)
  local rate = tonumber(os.getenv("SB_LAT_RATE") or "200")
  local sender = must(client:sender(queue))
  local rx = must(client:receiver(queue, { prefetch = PREFETCH }))
  local sent_at, lat = {}, {}
  local rop = must(rx:start_receive(PREFETCH, -1))
  local function harvest()
    if not rop or not rop:is_done() then return end
    local msgs = must(rop:result())
    rop = nil
    local now = now()
    local ops = {}
    for i = 1, #msgs do
      local t = sent_at[msgs[i].message_id]
      if t then lat[#lat + 1] = now - t; sent_at[msgs[i].message_id] = nil end
      ops[i] = must(msgs[i]:start_complete())
    end
    for i = 1, #ops do must(ops[i]:wait()) end
    if #lat < n then rop = must(rx:start_receive(PREFETCH, -1)) end
  end
  start()
  local t0, deadline = now(), now() + n / rate + 60
  local i = 0
  while #lat < n do
    if now() > deadline then error(("latency: %d of %d arrived"):format(#lat, n)) end
    if i < n and now() >= t0 + i / rate then
      local id = "lat-" .. i
      sent_at[id] = now()
      must(sender:send({ body = BODY, message_id = id }))
      i = i + 1
    end
    harvest()
    local wait = (i < n) and (t0 + i / rate - now()) or 1
    if wait > 0 and rop and not rop:is_done() then rop:wait(wait) end
    harvest()
  end
  stop()
  table.sort(lat)
  local function pick(q) return lat[math.min(#lat, math.floor(q * #lat) + 1)] * 1000 end
  if rop and not rop:is_done() then rop:cancel() end
  rx:close()
  sender:close()
  return { n = #lat, p50_ms = pick(0.50), p99_ms = pick(0.99), rate = rate,
           clock_resolution_ms = clock_res_ms }
end

local function idle(client)
  local wait = tonumber(os.getenv("SB_IDLE_S") or "10")
  local rx = must(client:receiver(queue))
  must(rx:receive(1, 1)) -- attach
  start()
  local got = must(rx:receive(1, wait))
  stop()
  rx:close()
  return { n = 0, idle_cpu_pct = 100 * meter.cpu / meter.seconds, unexpected = #got }
end

local ok, res = pcall(function()
  local opts = { ca_file = os.getenv("SB_CA") }
  local tr = os.getenv("SB_TRANSPORT")
  if tr and tr ~= "" then opts.transport = tr end
  local client = must(servicebus.from_connection_string(os.getenv("SB_CONN"), opts))
  local r
  if workload == "send_batch" then r = send(client, 100)
  elseif workload == "send_single" then r = send(client, 1)
  elseif workload == "recv_peeklock" then r = receive(client, true)
  elseif workload == "recv_rad" then r = receive(client, false)
  elseif workload == "latency" then r = latency(client)
  elseif workload == "idle" then r = idle(client)
  else error("unknown workload " .. tostring(workload)) end
  client:close()
  r.seconds, r.cpu_s = meter.seconds, meter.cpu
  return r
end)
if ok then
  res.ok = true
else
  res = { ok = false, error = tostring(res):sub(1, 400) }
end
res.rss_kb = peak_rss_kb()
emit(res)
os.exit(res.ok and 0 or 1)
