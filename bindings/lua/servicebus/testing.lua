-- servicebus.testing: a local Service Bus (sbus-emulator) for busted specs
-- and scripts, the Lua twin of Python's servicebus.testing.Emulator.
--
--   local testing = require "servicebus.testing"
--   local emu = testing.start{ config = "Config.json" }   -- or a table, or nothing
--   local client = require("servicebus").from_connection_string(emu.connection_string)
--   local q = assert(emu:create_queue(nil, { lock_duration = 5 }))  -- a fresh name
--   emu:advance(10)                                        -- the emulator clock
--   emu:counts(q).active                                   -- entity counters
--   emu:stop()
--
-- The file holds: finding the binary, a small JSON encoder/decoder (the
-- control surface speaks JSON and Lua has none built in), the HTTP transport
-- (curl, else bash's /dev/tcp), start, and the Emulator methods.
--
-- Pure Lua over io.popen/os.execute: the same file runs on Lua 5.4 and
-- LuaJIT and needs neither the C module nor luasocket. The emulator runs with
-- --exit-on-stdin-eof on a pipe only this process holds, so a busted run that
-- dies (even by SIGKILL) leaves no emulator behind. start() raises when the
-- emulator cannot start (missing binary, bad config: the emulator's reason);
-- control requests return `nil, message, code` on failure (code: "not-found",
-- "conflict", "bad-request", "http-<status>" or "unreachable"), like the rest
-- of the Lua binding.
--
-- The binary: opts.binary, $SBUS_EMULATOR, $SBUS_BUILD_DIR/emulator/sbus-emulator,
-- build/emulator/sbus-emulator of the source tree this file lives in, PATH.

local M = {}

M.DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
M.DEFAULT_KEY = "SAS_KEY_VALUE"

-- Microsoft's sample entities (queue.1, topic.1/subscription.1), as in Python.
M.DEFAULT_CONFIG = {
  UserConfig = {
    Namespaces = { {
      Name = "sbemulatorns",
      Queues = { { Name = "queue.1" } },
      Topics = { { Name = "topic.1", Subscriptions = { { Name = "subscription.1" } } } },
    } },
    Logging = { Type = "Console" },
  },
}

-- -- shell and files ---------------------------------------------------------

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function sh_ok(cmd)
  local a, _, c = os.execute(cmd)
  return a == true or a == 0 or (a == nil and c == 0) -- 5.4 returns true; LuaJIT 0
end

local function this_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) ~= "@" then return "." end
  return src:sub(2):match("^(.*)/[^/]*$") or "."
end

-- -- the binary --------------------------------------------------------------

function M.find_emulator(binary)
  if binary then
    if not exists(binary) then error("sbus-emulator: " .. binary .. " (binary=) does not exist", 2) end
    return binary
  end
  local env = os.getenv("SBUS_EMULATOR")
  if env and env ~= "" then
    if not exists(env) then error("sbus-emulator: $SBUS_EMULATOR=" .. env .. " does not exist", 2) end
    return env
  end
  local tried = {}
  local bd = os.getenv("SBUS_BUILD_DIR")
  if bd and bd ~= "" then
    local p = bd .. "/emulator/sbus-emulator"
    if exists(p) then return p end
    tried[#tried + 1] = p
  end
  -- bindings/lua/servicebus/testing.lua -> the repository root is three levels up
  local p = this_dir() .. "/../../../build/emulator/sbus-emulator"
  if exists(p) then return p end
  tried[#tried + 1] = p
  local which = io.popen("command -v sbus-emulator 2>/dev/null")
  local found = which and which:read("*l")
  if which then which:close() end
  if found and found ~= "" then return found end
  tried[#tried + 1] = "PATH"
  error("sbus-emulator not found (looked in: " .. table.concat(tried, "; ") .. "). Build it "
        .. "(cmake --build build --target sbus-emulator) or set SBUS_EMULATOR=/path/to/sbus-emulator", 2)
end

-- -- JSON ----------------------------------------------------------------------

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  return n == #t and (n > 0 or getmetatable(t) == M.array_mt)
end

M.array_mt = {}
--- An empty table that encodes as [] (an empty table is {} otherwise).
function M.array(t) return setmetatable(t or {}, M.array_mt) end

local function encode(v, out)
  local t = type(v)
  if t == "nil" then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("JSON cannot hold " .. tostring(v)) end
    out[#out + 1] = (v % 1 == 0 and math.abs(v) < 2^53) and string.format("%d", v) or string.format("%.17g", v)
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      return escapes[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, out)
        out[#out + 1] = ":"
        local val = v[k]
        if val == nil then val = v[tonumber(k)] end
        encode(val, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("JSON cannot hold a " .. t)
  end
end

function M.json_encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
                     0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local decode_value

local function skip(s, i)
  return (s:find("[^ \t\r\n]", i)) or #s + 1
end

local function decode_string(s, i) -- s:sub(i, i) == '"'
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then error("JSON: unterminated string") end
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\\" then
      local e = s:sub(j + 1, j + 1)
      local simple = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
      if simple[e] then
        out[#out + 1] = simple[e]
        j = j + 2
      elseif e == "u" then
        local cp = tonumber(s:sub(j + 2, j + 5), 16)
        j = j + 6
        if cp >= 0xD800 and cp < 0xDC00 and s:sub(j, j + 1) == "\\u" then
          local lo = tonumber(s:sub(j + 2, j + 5), 16)
          cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
          j = j + 6
        end
        out[#out + 1] = utf8_char(cp)
      else
        error("JSON: bad escape \\" .. e)
      end
    else
      local k = s:find('["\\]', j) or #s + 1
      out[#out + 1] = s:sub(j, k - 1)
      j = k
    end
  end
end

decode_value = function(s, i)
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local t = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then return t, i + 1 end
    while true do
      local k
      k, i = decode_string(s, skip(s, i))
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then error("JSON: ':' expected at " .. i) end
      t[k], i = decode_value(s, i + 1)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "}" then return t, i + 1 end
      if d ~= "," then error("JSON: ',' or '}' expected at " .. i) end
      i = i + 1
    end
  elseif c == "[" then
    local t = M.array()
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then return t, i + 1 end
    while true do
      t[#t + 1], i = decode_value(s, i)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "]" then return t, i + 1 end
      if d ~= "," then error("JSON: ',' or ']' expected at " .. i) end
      i = i + 1
    end
  elseif c == '"' then
    return decode_string(s, i)
  elseif s:sub(i, i + 3) == "true" then return true, i + 4
  elseif s:sub(i, i + 4) == "false" then return false, i + 5
  elseif s:sub(i, i + 3) == "null" then return nil, i + 4
  end
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if not num or num == "" then error("JSON: unexpected '" .. c .. "' at " .. i) end
  return tonumber(num), i + #num
end

function M.json_decode(s)
  local v, i = decode_value(s, 1)
  if skip(s, i) <= #s then error("JSON: trailing data at " .. i) end
  return v
end

-- Removes // and /* */ comments outside strings (Microsoft's Config.json has them).
function M.strip_json_comments(text)
  local out, i, n = {}, 1, #text
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      local j = i + 1
      while j <= n and text:sub(j, j) ~= '"' do
        j = j + (text:sub(j, j) == "\\" and 2 or 1)
      end
      out[#out + 1] = text:sub(i, j)
      i = j + 1
    elseif text:sub(i, i + 1) == "//" then
      i = text:find("\n", i, true) or n + 1
    elseif text:sub(i, i + 1) == "/*" then
      local j = text:find("*/", i + 2, true)
      i = j and j + 2 or n + 1
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

-- The namespace policy a client should use: the first with Manage rights.
local function root_policy(config)
  local ns = type(config) == "table" and config.UserConfig and config.UserConfig.Namespaces
             and config.UserConfig.Namespaces[1]
  for _, p in ipairs(type(ns) == "table" and ns.SharedAccessPolicies or {}) do
    for _, r in ipairs(p.Rights or {}) do
      if r == "Manage" then return p.Name, p.Key end
    end
  end
  return M.DEFAULT_KEY_NAME, M.DEFAULT_KEY
end

-- -- control surface transport -------------------------------------------------

-- M.http_client: "curl", "bash" (its /dev/tcp), or nil to pick curl when it is installed.
local has_curl
local function curl_available()
  if M.http_client then return M.http_client == "curl" end
  if has_curl == nil then has_curl = sh_ok("command -v curl >/dev/null 2>&1") end
  return has_curl
end

-- One HTTP request; returns status (number, 0 if unreachable) and body text.
local function http(address, method, path, body)
  local data = body ~= nil and M.json_encode(body) or ""
  local cmd
  if curl_available() then
    cmd = ("curl -sS -X %s -H 'Content-Type: application/json' --data-binary %s -w '\\n%%{http_code}' %s 2>&1")
          :format(method, quote(data), quote("http://" .. address .. path))
  else
    local host, port = address:match("^(.*):(%d+)$")
    local request = ("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     .. "Connection: close\r\n\r\n%s"):format(method, path, host, #data, data)
    cmd = ("bash -c %s _ %s 2>&1"):format(
      quote(('exec 3<>/dev/tcp/%s/%s && printf "%%s" "$1" >&3 && cat <&3'):format(host, port)), quote(request))
  end
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a") or ""
  p:close()
  if curl_available() then
    local text, status = out:match("^(.*)\n(%d%d%d)$")
    if not status or status == "000" then return 0, out:gsub("\n?000$", "") end
    return tonumber(status), text
  end
  local status = out:match("^HTTP/1%.%d (%d%d%d)")
  if not status then return 0, out end
  return tonumber(status), (out:match("\r\n\r\n(.*)$") or "")
end

local codes = { [400] = "bad-request", [404] = "not-found", [409] = "conflict" }

-- -- names and properties ---------------------------------------------------------

local counter = 0
--- `<prefix>-<random hex>`: a name no other spec uses.
function M.unique_name(prefix)
  counter = counter + 1
  return ("%s-%06x%04x%02x"):format(prefix or "entity", math.random(0, 0xffffff), os.time() % 0x10000, counter % 256)
end

local properties = {
  lock_duration = { "LockDuration", true },
  max_delivery_count = { "MaxDeliveryCount" },
  requires_session = { "RequiresSession" },
  default_message_time_to_live = { "DefaultMessageTimeToLive", true },
  dead_lettering_on_message_expiration = { "DeadLetteringOnMessageExpiration" },
  requires_duplicate_detection = { "RequiresDuplicateDetection" },
  duplicate_detection_history_time_window = { "DuplicateDetectionHistoryTimeWindow", true },
  forward_to = { "ForwardTo" },
  forward_dead_lettered_messages_to = { "ForwardDeadLetteredMessagesTo" },
}
local durations = {}
for _, v in pairs(properties) do if v[2] then durations[v[1]] = true end end

local function iso_duration(v)
  if type(v) == "string" then return v end
  if v % 1 == 0 then return ("PT%dS"):format(v) end
  return ("PT%.3fS"):format(v)
end

-- snake_case or Microsoft's names -> Microsoft's Properties object (raises on a typo).
function M.entity_properties(props)
  local out = {}
  for k, v in pairs(props or {}) do
    local camel, is_duration
    if properties[k] then
      camel, is_duration = properties[k][1], properties[k][2]
    elseif k:match("^%u") then
      camel, is_duration = k, durations[k]
    else
      local known = {}
      for name in pairs(properties) do known[#known + 1] = name end
      table.sort(known)
      error("unknown entity property '" .. k .. "' (known: " .. table.concat(known, ", ") .. ")", 3)
    end
    out[camel] = is_duration and iso_duration(v) or v
  end
  return out
end

-- -- the Emulator object ---------------------------------------------------------

local Emulator = {}
Emulator.__index = Emulator

--- One control request: the decoded answer, or nil, message, code.
function Emulator:request(method, path, body)
  if not self.control then error("this emulator has no control port", 2) end
  local status, text = http(self.control, method, path, body)
  if status == 0 then return nil, "control port " .. self.control .. ": " .. text, "unreachable" end
  local ok, answer = pcall(M.json_decode, text)
  if not ok then answer = text end
  if status >= 300 then
    local msg = type(answer) == "table" and answer.error or tostring(answer)
    return nil, ("%s %s: %d %s"):format(method, path, status, tostring(msg)), codes[status] or ("http-" .. status)
  end
  if answer == nil then answer = true end
  return answer
end

function Emulator:health() return self:request("GET", "/health") end
function Emulator:entities() return self:request("GET", "/entities") end
function Emulator:clock() return self:request("GET", "/clock") end

--- The counters of one entity (active, scheduled, deferred, dead_lettered, locked, total).
function Emulator:counts(path)
  local all, err, code = self:entities()
  if not all then return nil, err, code end
  for name, c in pairs(all) do
    if name:lower() == path:lower() then return c end
  end
  return nil, "no such entity: " .. path, "not-found"
end

--- Moves the emulator clock forward: locks expire, schedules activate, TTLs apply.
function Emulator:advance(seconds)
  if type(seconds) ~= "number" or seconds < 0 then error("advance: seconds must be a number >= 0", 2) end
  return self:request("POST", "/clock", { advance_ms = math.floor(seconds * 1000 + 0.5) })
end

function Emulator:faults(body) return self:request("POST", "/faults", body) end
function Emulator:drop_connections() return self:faults({ drop_connections = true }) end
function Emulator:reset_faults() return self:faults({ reset = true }) end
function Emulator:fail_next(n, op, condition)
  return self:faults({ fail_next = n, op = op, condition = condition or "com.microsoft:server-busy" })
end
function Emulator:detach(entity, condition)
  return self:faults({ detach = entity, condition = condition or "amqp:link:detach-forced" })
end

--- Creates a queue (a fresh name when name is nil); returns its name.
--  props: { lock_duration = 5, requires_session = true, ... } or Microsoft's names.
function Emulator:create_queue(name, props)
  name = name or M.unique_name("queue")
  local ok, err, code = self:request("POST", "/entities",
    { Queue = { Name = name, Properties = M.entity_properties(props) } })
  if not ok then return nil, err, code end
  return name
end

--- Creates a topic with subscriptions (names or Microsoft's objects); returns its name.
function Emulator:create_topic(name, subscriptions, props)
  name = name or M.unique_name("topic")
  local subs = M.array()
  for _, s in ipairs(subscriptions or {}) do
    subs[#subs + 1] = type(s) == "string" and { Name = s } or s
  end
  local ok, err, code = self:request("POST", "/entities",
    { Topic = { Name = name, Properties = M.entity_properties(props), Subscriptions = subs } })
  if not ok then return nil, err, code end
  return name
end

--- Adds a subscription to a topic; opts.sql_filter, opts.rules (Microsoft's), or properties.
function Emulator:create_subscription(topic, name, opts)
  name = name or M.unique_name("sub")
  local props, rules = {}, nil
  for k, v in pairs(opts or {}) do
    if k == "sql_filter" then
      rules = { { Name = "$Default", Properties = { FilterType = "Sql", SqlFilter = { SqlExpression = v } } } }
    elseif k == "rules" then
      rules = v
    else
      props[k] = v
    end
  end
  local sub = { Name = name, Properties = M.entity_properties(props), Rules = rules }
  local ok, err, code = self:request("POST", "/entities", { Subscription = sub, TopicName = topic })
  if not ok then return nil, err, code end
  return name
end

--- Deletes a queue, topic or subscription (`topic/Subscriptions/sub`).
function Emulator:delete(path)
  local encoded = path:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)
  local ok, err, code = self:request("DELETE", "/entities/" .. encoded)
  if not ok then return nil, err, code end
  return true
end

--- A connection string with another policy (or a wrong key).
function Emulator:connection_string_for(key_name, key)
  return ("Endpoint=sb://localhost:%d;SharedAccessKeyName=%s;SharedAccessKey=%s;UseDevelopmentEmulator=true;")
         :format(self.port, key_name, key)
end

--- Stops the emulator (SIGTERM) and removes its temporary files. Idempotent.
function Emulator:stop()
  if not self.pid then return end
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  if self.proc then self.proc:close() end -- closes its stdin (it exits) and waits for it
  if self.out then self.out:close() end
  self.proc, self.out, self.pid = nil, nil, nil
  if self.tmpdir then os.execute("rm -rf " .. quote(self.tmpdir)) end
  self.tmpdir = nil
end

function Emulator:running()
  return self.pid ~= nil and sh_ok("kill -0 " .. self.pid .. " 2>/dev/null")
end

-- A finalizer that stops a forgotten emulator when the Lua state closes
-- (tables have __gc on 5.4; LuaJIT needs a newproxy).
local function guard(emu)
  local function gc() if emu.pid then emu:stop() end end
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = gc
    return p
  end
  return setmetatable({}, { __gc = gc })
end

--- Starts sbus-emulator on free ports; raises with the reason if it cannot.
--  opts.config: a path, a table (Microsoft's Config.json as Lua), or nil (M.DEFAULT_CONFIG)
--  opts.binary, opts.host ("127.0.0.1"), opts.amqp_port (0), opts.control_port (0),
--  opts.amqps_port (nil: TLS off; 0: a free port), opts.verbose, opts.args (more arguments, a list)
function M.start(opts)
  opts = opts or {}
  local binary = M.find_emulator(opts.binary)
  local tmpdir = os.tmpname()
  os.remove(tmpdir)
  assert(sh_ok("mkdir -p " .. quote(tmpdir)), "cannot create " .. tmpdir)
  local config = opts.config
  local key_name, key
  if config == nil or type(config) == "table" then
    local t = config or M.DEFAULT_CONFIG
    key_name, key = root_policy(t)
    config = tmpdir .. "/config.json"
    local f = assert(io.open(config, "w"))
    f:write(M.json_encode(t))
    f:close()
  elseif not exists(config) then
    os.execute("rm -rf " .. quote(tmpdir))
    error("emulator config " .. config .. ": no such file", 2)
  else
    -- a file the emulator will judge; we only look for its policies
    local ok, t = pcall(M.json_decode, M.strip_json_comments(slurp(config)))
    key_name, key = root_policy(ok and t or nil)
  end
  local log = tmpdir .. "/emulator.log"
  local args = { binary, "--config", config, "--host", opts.host or "127.0.0.1",
                 "--amqp-port", tostring(opts.amqp_port or 0), "--control-port", tostring(opts.control_port or 0),
                 "--state-dir", tmpdir }
  if opts.amqps_port then
    args[#args + 1] = "--amqps-port"
    args[#args + 1] = tostring(opts.amqps_port)
  end
  for _ = 1, (opts.verbose or 0) do args[#args + 1] = "--verbose" end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  args[#args + 1] = "--exit-on-stdin-eof"
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = quote(a) end
  -- The emulator's stdin is a pipe only this Lua process holds (popen "w"),
  -- so it exits when we do, even after kill -9. Its stdout goes through a
  -- FIFO we read: the shell points its stdout there, prints its pid, then
  -- becomes the emulator (same pid), which prints its ready line.
  local fifo = tmpdir .. "/ready"
  assert(sh_ok("mkfifo " .. quote(fifo)), "mkfifo failed")
  local proc = assert(io.popen(("exec >%s 2>>%s; echo $$; exec %s")
                               :format(quote(fifo), quote(log), table.concat(quoted, " ")), "w"))
  local out = assert(io.open(fifo, "r")) -- returns once the shell has opened its end
  local pid = out:read("*l")
  local ready = out:read("*l")
  if not ready or not ready:match("^sbus%-emulator ready") then
    out:close()
    proc:close()
    local err = slurp(log):gsub("%s+$", "")
    os.execute("rm -rf " .. quote(tmpdir))
    local reason = err:match("([^\n]*)$") or ""
    if reason:match("invalid config") then
      error((reason:gsub("^sbus%-emulator: ", "")), 2)
    end
    error("sbus-emulator did not start (" .. tostring(ready) .. "): " .. err, 2)
  end
  local emu = setmetatable({
    pid = pid, proc = proc, out = out, ready_line = ready, binary = binary, config_path = config, log_file = log,
    tmpdir = tmpdir, host = opts.host or "127.0.0.1",
    port = tonumber(ready:match("amqp=[^%s]-:(%d+)")),
    amqps_port = tonumber(ready:match("amqps=[^%s]-:(%d+)")),
    control = ready:match("control=(%S+)"),
    ca_file = ready:match("ca=(%S+)"),
    sas_key_name = key_name, sas_key = key,
  }, Emulator)
  emu.amqp_port = emu.port
  emu.namespace = ("localhost:%d"):format(emu.port)
  emu.connection_string = emu:connection_string_for(key_name, key)
  emu._guard = guard(emu)
  return emu
end

return M
