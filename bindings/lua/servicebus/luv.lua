-- servicebus.luv: drives servicebus clients from a libuv loop (lua-luv)
-- through the step API, and runs code that reads like blocking code in
-- coroutines.
--
--   local uv = require "luv"
--   local sbl = require "servicebus.luv"
--   local loop = sbl.new()                       -- on luv's default loop
--   local client = loop:client(conn_str)         -- connects without blocking
--   loop:spawn(function(await)
--     local sender = await(client:start_sender("queue.1"))  -- see below
--     ...
--   end)
--   uv.run()
--
-- Inside a spawned function, await(op) suspends the coroutine until the op
-- completes and returns its results (nil, msg, code on failure). The step
-- API underneath: client:fd() is watched with uv.new_poll for
-- client:events(), a uv timer fires at client:timeout(), and every wake-up
-- calls client:step(), then resumes the coroutines whose op is done.
--
-- Helpers that fit await: loop:sender(client, entity) and
-- loop:receiver(client, entity, opts) attach a link and return the object.
local uv = require "luv"
local sb = require "servicebus"

local M = {}
local Loop = {}
Loop.__index = Loop

function M.new()
  return setmetatable({ watched = {}, tasks = {} }, Loop)
end

-- Watches client (step API) until it is closed.
function Loop:watch(client)
  local w = { client = client, timer = uv.new_timer() }
  self.watched[client] = w
  self:rearm(w)
  return client
end

function Loop:unwatch(client)
  local w = self.watched[client]
  if not w then return end
  self.watched[client] = nil
  if w.poll then w.poll:stop(); w.poll:close() end
  w.timer:stop()
  w.timer:close()
end

-- Re-reads fd, events and timeout of one client and arms luv for them.
function Loop:rearm(w)
  local c = w.client
  if c:is_closed() then return self:unwatch(c) end
  local fd = c:fd()
  if fd ~= w.fd then
    if w.poll then w.poll:stop(); w.poll:close(); w.poll = nil end
    w.fd = fd
    if fd then w.poll = uv.new_poll(fd) end
  end
  if w.poll then
    local ev = c:events()
    if ev == "" then
      w.poll:stop()
    else
      w.poll:start(ev, function() self:wake(w) end)
    end
  end
  w.timer:stop()
  local t = c:timeout()
  if t then
    w.timer:start(math.max(0, math.ceil(t * 1000)), 0, function() self:wake(w) end)
  end
end

function Loop:rearm_all()
  for _, w in pairs(self.watched) do self:rearm(w) end
end

-- One wake-up of client w: step it, resume whoever is done, re-arm.
function Loop:wake(w)
  if not w.client:is_closed() then w.client:step() end
  self:resume_ready()
  self:rearm_all()
end

function Loop:resume_ready()
  local again = true
  while again do
    again = false
    for co, op in pairs(self.tasks) do
      if op == true or op.done then
        self.tasks[co] = nil
        self:resume(co)
        again = true
      end
    end
  end
end

function Loop:resume(co, ...)
  local ok, op = coroutine.resume(co, ...)
  if not ok then
    error(debug.traceback(co, tostring(op)), 0)
  end
  if coroutine.status(co) ~= "dead" then
    self.tasks[co] = op or true
  end
end

-- Runs fn(await) in a coroutine on this loop.
function Loop:spawn(fn, ...)
  local co = coroutine.create(fn)
  local function await(op, ...)
    if not op then return op, ... end -- start_* refused: nil, msg, code
    if not op.done then coroutine.yield(op) end
    return op:result()
  end
  local args = { ... }
  -- start on the next loop turn so that spawn never runs user code inline
  local t = uv.new_timer()
  t:start(0, 0, function()
    t:close()
    self:resume(co, await, (table.unpack or unpack)(args))
    self:rearm_all()
  end)
  return co
end

-- A client that is watched by this loop and not yet open (its open op is
-- the second result: await it).
function Loop:client(conn_str, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.connection_string = conn_str
  local c, err, code = sb.new(o)
  if not c then return nil, err, code end
  local op
  op, err, code = c:start_open()
  if not op then return nil, err, code end
  self:watch(c)
  return c, op
end

-- Attach helpers: await(loop:sender(client, "q")) -> sender or nil, msg, code
local function attached(obj, op, err)
  if not obj then
    return { done = true, result = function() return nil, op, err end }
  end
  return {
    op = op,
    result = function()
      local ok, e, c = op:result()
      if not ok then obj:_free(); return nil, e, c end
      return obj
    end,
  }
end

local function proxy(t)
  -- an object await() understands: done follows the underlying op
  return setmetatable(t, { __index = function(_, k)
    if k == "done" then return t.op == nil or t.op.done end
  end })
end

function Loop:sender(client, entity)
  local p = proxy(attached(client:start_sender(entity)))
  self:rearm_all()
  return p
end

function Loop:receiver(client, entity, opts)
  local p = proxy(attached(client:start_receiver(entity, opts)))
  self:rearm_all()
  return p
end

-- A pause for await: await(loop:sleep(0.5)).
function Loop:sleep(seconds)
  local p = { done = false, result = function() return true end }
  local t = uv.new_timer()
  t:start(math.floor(seconds * 1000), 0, function()
    t:close()
    p.done = true
    self:resume_ready()
    self:rearm_all()
  end)
  return p
end

-- Closes client without blocking the loop: await(loop:close(client)).
function Loop:close(client)
  local op = client:start_close()
  local p = proxy({ op = op, result = function()
    self:unwatch(client) -- stop polling the fd before the driver closes it
    client:_free()
    return true
  end })
  self:rearm_all()
  return p
end

M.Loop = Loop
return M
