-- helper.lua: what every Lua spec needs.
--
--   local helper = require "helper"
--   local emu = helper.start_emulator()  -- sbus-emulator on a free port
--   emu.connection_string                 -- for servicebus.from_connection_string
--   emu:stop()
--   helper.client(emu)                    -- a connected client (asserts)
--   helper.unique(prefix)                 -- a fresh message id / marker
--   helper.drain(client, queue)           -- empties a queue (receive_and_delete)
--
-- The emulator binary is $SBUS_EMULATOR, else $SBUS_BUILD_DIR/emulator/
-- sbus-emulator, else <repo>/build/emulator/sbus-emulator. It is started
-- with io.popen through `sh -c 'echo $$; exec ...'` so that the first line
-- is its pid and the second its ready line.
local sb = require "servicebus"

local M = {}

local function here()
  local src = debug.getinfo(1, "S").source:sub(2)
  return src:match("^(.*)/[^/]*$") or "."
end

M.root = here() .. "/../.."
M.config = M.root .. "/examples/emulator-config.json"
M.key = "SAS_KEY_VALUE"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

function M.emulator_path()
  local env = os.getenv("SBUS_EMULATOR")
  if env and env ~= "" then return env end
  local bd = os.getenv("SBUS_BUILD_DIR")
  if bd and exists(bd .. "/emulator/sbus-emulator") then
    return bd .. "/emulator/sbus-emulator"
  end
  return M.root .. "/build/emulator/sbus-emulator"
end

function M.connection_string(port, key)
  return ("Endpoint=sb://localhost:%d;SharedAccessKeyName=RootManageSharedAccessKey;"
          .. "SharedAccessKey=%s;UseDevelopmentEmulator=true;"):format(port, key or M.key)
end

local Emulator = {}
Emulator.__index = Emulator

function Emulator:stop()
  if self.tool then
    self.tool:stop()
    self.tool, self.pid = nil, nil
  end
end

-- Starts the emulator; extra: more command-line arguments (string).
-- Dogfooding: the process is run by the public helper servicebus.testing
-- (bindings/lua/servicebus/testing.lua), which also makes the emulator exit
-- with this Lua process even after kill -9; this function only keeps the
-- small interface the specs use (port, ready, control_addr, ...).
function M.start_emulator(extra)
  local testing = require "servicebus.testing"
  local args = {}
  for a in (extra or ""):gmatch("%S+") do args[#args + 1] = a end
  -- testing.start always opens a control port: drop a duplicate request
  for i = #args - 1, 1, -1 do
    if args[i] == "--control-port" then table.remove(args, i + 1); table.remove(args, i) end
  end
  local ok, tool = pcall(testing.start, { binary = M.emulator_path(), config = M.config, args = args })
  if not ok then error("sbus-emulator did not start: " .. tostring(tool), 2) end
  local emu = setmetatable({
    tool = tool, pid = tool.pid, port = tool.port, ready = tool.ready_line, log = tool.log_file,
    control_addr = tool.control, amqps_port = tool.amqps_port, ca_file = tool.ca_file,
  }, Emulator)
  emu.connection_string = M.connection_string(emu.port)
  return emu
end

-- A minimal JSON encoder for control-surface bodies (tables of strings,
-- numbers, booleans and nested tables with string keys).
local function json(v)
  local t = type(v)
  if t == "table" then
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = json(tostring(k)) .. ":" .. json(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
  end
  return tostring(v)
end
M.json = json

-- One request to the emulator's control surface (started with
-- --control-port 0): returns the HTTP status and the body text.
function Emulator:control(method, path, body)
  assert(self.control_addr, "start the emulator with --control-port 0")
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "w"))
  f:write(body and json(body) or "")
  f:close()
  local p = assert(io.popen(("env -u LD_PRELOAD curl -s -m 10 -X %s -H 'Content-Type: application/json' "
    .. "--data-binary @%s -w '\n%%{http_code}' 'http://%s%s'"):format(method, tmp, self.control_addr, path)))
  local out = p:read("*a")
  p:close()
  os.remove(tmp)
  local text, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), text
end

-- Creates a queue through the control surface (201, or 409 if it exists).
function Emulator:create_queue(name, properties)
  local status, text = self:control("POST", "/entities", { Queue = { Name = name, Properties = properties or {} } })
  assert(status == 201 or status == 409, ("create %s: %s %s"):format(name, tostring(status), tostring(text)))
  return name
end

function M.client(emu, opts)
  local client, err, code = sb.from_connection_string(emu.connection_string, opts)
  assert(client, ("connect: %s (%s)"):format(tostring(err), tostring(code)))
  return client
end

-- Inside a describe block: starts an emulator and a connected client before
-- its tests and stops both after them. Returns a table whose emu and client
-- fields are set once the tests run. busted's setup and teardown are passed
-- in: they live in the spec's environment, not in this module's.
function M.emulator_and_client(setup, teardown, opts)
  local ctx = {}
  setup(function()
    ctx.emu = M.start_emulator()
    ctx.client = M.client(ctx.emu, opts)
  end)
  teardown(function()
    if ctx.client then ctx.client:close() end
    if ctx.emu then ctx.emu:stop() end
  end)
  return ctx
end

local counter = 0
function M.unique(prefix)
  counter = counter + 1
  return ("%s-%d-%d-%d"):format(prefix or "m", os.time(), math.random(1, 1e6), counter)
end

-- Removes every message from queue (returns how many).
function M.drain(client, queue, opts)
  local o = { mode = "receive_and_delete" }
  for k, v in pairs(opts or {}) do o[k] = v end
  local rx = assert(client:receiver(queue, o))
  local n = 0
  while true do
    local msgs = assert(rx:receive(100, 0.2))
    if #msgs == 0 then break end
    n = n + #msgs
  end
  rx:close()
  return n
end

-- Runs a shell command; returns its output (stdout and stderr) and exit
-- status. The status travels as a last line: LuaJIT's pclose does not give it.
function M.sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"@rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)@rc=(%d+)%s*$")
  return body or out, tonumber(rc)
end

-- A TCP port nobody listens on (for nginx and relays the specs start).
function M.free_port()
  local out = M.sh([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])
  return assert(tonumber(out:match("%d+")), out)
end

-- GET http://127.0.0.1:port/path with curl; `limit` (seconds, default 20)
-- bounds it. Returns the body (without its final newline) and the status.
function M.http(port, path, limit)
  local out = M.sh(("curl -s -m %d -w '\\n%%{http_code}' 'http://127.0.0.1:%d%s'"):format(limit or 20, port, path))
  local body, code = out:match("^(.*)\n(%d+)$")
  if body then body = body:gsub("\n$", "") end
  return body, tonumber(code)
end

-- Which module file got loaded (run.sh checks it is the one it built).
function M.module_path()
  return package.searchpath and package.searchpath("servicebus", package.cpath)
end

return M
