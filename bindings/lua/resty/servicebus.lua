-- resty.servicebus: the servicebus client inside OpenResty / nginx-lua.
--
-- The Lua side owns an ngx.socket.tcp cosocket and pumps bytes through the
-- engine (the C module `servicebus` in host mode): C never yields and never
-- opens a socket, so nothing here blocks an nginx worker. Conventions of
-- lua-resty-redis:
--
--   local rsb = require "resty.servicebus"
--   local sb = rsb.new()
--   sb:set_timeouts(5000, 5000, 60000)        -- connect, send, read (ms)
--   local ok, err = sb:connect(conn_str)      -- ok = 1 on success
--   local sender = sb:sender("queue.1")
--   local ok, err, code = sender:send({ body = "hi", message_id = "1" })
--   local rx = sb:receiver("queue.1")
--   local msgs = rx:receive(10, 1)            -- yields, never blocks
--   for _, m in ipairs(msgs) do m:complete() end
--   sb:close()
--
-- Every method of the plain module works on it (sender, receiver,
-- session_receiver, send, receive, complete, ...): blocking calls wait on
-- the cosocket. Light threads of one request or timer may share a
-- connection: the first one that waits reads the socket, the others send
-- their bytes and sleep on a semaphore until it makes progress or hands the
-- reading over. start_pump() gives the reading to a light thread of its own
-- so that engine timers (lock renewal) run while the caller does other work.
--
-- Background work (see rsb.consumer and rsb.worker_sender below) runs in
-- ngx.timer.at timers, which is where cosockets are allowed outside
-- requests (not in init_worker_by_lua itself: start the timer there).
local sb = require "servicebus"

local ngx = ngx
local tcp = ngx.socket.tcp
local now = ngx.now
local min, max = math.min, math.max

local _M = { _VERSION = sb.version, null = sb.null }
local mt = {}

-- Methods we do not define are the engine client's.
mt.__index = function(self, k)
  local v = _M[k]
  if v ~= nil then return v end
  local c = rawget(self, "client")
  if c then
    local f = c[k]
    if type(f) == "function" then
      return function(s, ...)
        if s == self then return f(c, ...) end
        return f(s, ...)
      end
    end
    return f
  end
end

function _M.new()
  return setmetatable({
    connect_timeout = 10000, send_timeout = 10000, read_timeout = 60000,
  }, mt)
end

-- set_timeouts(connect_ms, send_ms, read_ms): cosocket timeouts. The read
-- timeout bounds one wait for bytes; engine deadlines (operation timeouts,
-- receive max_wait, token refresh, lock renewal) are honoured in between.
function _M:set_timeouts(connect, send, read)
  self.connect_timeout = connect or self.connect_timeout
  self.send_timeout = send or self.send_timeout
  self.read_timeout = read or self.read_timeout
  return 1
end

-- Opens the socket the engine asked for; TLS by sslhandshake unless the
-- connection string says UseDevelopmentEmulator=true.
function _M:_open_socket(host, port)
  local sock = tcp()
  sock:settimeouts(self.connect_timeout, self.send_timeout, self.read_timeout)
  -- nginx resolves names only with a `resolver` directive; spare the
  -- development emulator that requirement.
  local addr = self.connect_host or (host == "localhost" and "127.0.0.1") or host
  local ok, err = sock:connect(addr, port)
  if not ok then
    ngx.log(ngx.WARN, "servicebus: connect ", addr, ":", port, ": ", err)
    return nil, "connect " .. host .. ":" .. port .. ": " .. tostring(err)
  end
  if self.tls then
    local sess
    sess, err = sock:sslhandshake(nil, self.server_name or host, self.ssl_verify ~= false)
    if not sess then
      sock:close()
      return nil, "tls: " .. tostring(err)
    end
  end
  self.sock = sock
  self.connects = (self.connects or 0) + 1
  return true
end

function _M:_close_socket()
  if self.sock then
    self.sock:close()
    self.sock = nil
  end
end

-- Writes everything the engine wrote. One writer at a time: a second
-- light thread finds `writing` set and leaves its bytes to the first, which
-- takes output until there is none. Returns true if it wrote anything.
function _M:_flush(c)
  if self.writing then return false end
  local acted = false
  local out = c:take_output()
  if not out then return false end
  self.writing = true
  while out do
    acted = true
    if not self.sock then break end -- no transport: the engine knows
    local ok, err = self.sock:send(out)
    if not ok then
      self:_close_socket()
      c:transport_down("send: " .. tostring(err))
      break
    end
    out = c:take_output()
  end
  self.writing = false
  return acted
end

-- One round of the host's chores: answer connect/disconnect requests and
-- write everything the engine wrote. Returns true if it did anything.
function _M:_service(c)
  local acted = false
  local host, port = c:connect_request()
  if host then
    acted = true
    self:_close_socket()
    local ok, err = self:_open_socket(host, port)
    if ok then c:transport_up() else c:transport_down(err) end
  end
  if c:disconnect_request() then
    acted = true
    self:_flush(c)
    self:_close_socket()
  end
  return self:_flush(c) or acted
end

-- Moves bytes until op completes or timeout (seconds) passes. This is the
-- host's half of the engine contract (sbus.h): connect when asked, write
-- what the engine wrote, read into it, tick its clock.
function _M:_pump(op, timeout, client)
  local c = client or self.client
  local deadline = timeout and now() + timeout
  if self.pump_thread and not self.pump_done then
    return self:_wait_for_pump(c, op, deadline)
  end
  while not op.done and not c:is_closed() do
    if self.pumping then
      -- another light thread is reading this connection: put our bytes on
      -- the wire and sleep until it makes progress or hands the reading over
      self:_flush(c)
      local wait = 1
      if deadline then
        wait = min(wait, deadline - now())
        if wait <= 0 then return end
      end
      self:_ensure_sem()
      self.waiters = self.waiters + 1
      self.sem:wait(wait)
      self.waiters = self.waiters - 1
    else
      self.pumping = true
      local ok, err = pcall(self._pump_own, self, c, op, deadline)
      self.pumping = false
      self:_wake_waiters()
      if not ok then error(err, 0) end
      return
    end
  end
end

-- The reading light thread's loop (see _pump): until op is done.
function _M:_pump_own(c, op, deadline)
  while not op.done and not c:is_closed() do
    local t
    repeat
      t = c:tick()
    until not self:_service(c) or op.done or c:is_closed()
    self:_wake_waiters()
    if op.done or c:is_closed() then break end
    local wait = self.read_timeout / 1000
    if t then wait = min(wait, t) end
    if deadline then
      local left = deadline - now()
      if left <= 0 then break end
      wait = min(wait, left)
    end
    if self.sock then
      self.sock:settimeouts(self.connect_timeout, self.send_timeout, max(1, wait * 1000))
      local data, err = self.sock:receiveany(65536)
      if data then
        c:feed(data)
        self:_wake_waiters()
      elseif err ~= "timeout" then
        self:_close_socket()
        c:transport_down("receive: " .. tostring(err))
      end
    else
      -- no socket: the engine is backing off until its next deadline
      ngx.sleep(max(0.001, wait))
    end
  end
end

-- A waiter while the pump thread owns the reading: put our request on the
-- wire, then sleep on the semaphore the pump posts after every wake-up.
function _M:_wait_for_pump(c, op, deadline)
  self:_flush(c)
  while not op.done and not c:is_closed() and not self.pump_done do
    local wait = 1
    if deadline then
      wait = min(wait, deadline - now())
      if wait <= 0 then return end
    end
    self.waiters = self.waiters + 1
    self.sem:wait(wait)
    self.waiters = self.waiters - 1
    self:_flush(c)
  end
  if not op.done and self.pump_done and not c:is_closed() then
    -- the pump stopped (close or error): finish by pumping ourselves
    self.pump_thread = nil
    return self:_pump(op, deadline and max(0, deadline - now()), c)
  end
end

function _M:_ensure_sem()
  if not self.sem then
    local semaphore = require "ngx.semaphore"
    self.sem = semaphore.new()
    self.waiters = 0
  end
end

function _M:_wake_waiters()
  if self.sem and self.waiters > 0 then self.sem:post(self.waiters) end
end

-- The pump thread's loop: tick, answer the engine, read with a timeout no
-- longer than the next engine deadline (lock renewal, token refresh,
-- receive max_wait) and at most one second, so that stop requests are seen.
function _M:_pump_loop(c)
  while self.pumping do -- a blocking call is reading: let it finish
    self.waiters = self.waiters + 1
    self.sem:wait(1)
    self.waiters = self.waiters - 1
  end
  while not self.pump_stop and not c:is_closed() do
    local t
    repeat
      t = c:tick()
    until not self:_service(c) or c:is_closed()
    self:_wake_waiters()
    if c:is_closed() then break end
    local wait = min(1, self.read_timeout / 1000)
    if t then wait = min(wait, t) end
    if self.sock then
      self.sock:settimeouts(self.connect_timeout, self.send_timeout, max(1, wait * 1000))
      local data, err = self.sock:receiveany(65536)
      if data then
        c:feed(data)
      elseif err ~= "timeout" then
        self:_close_socket()
        c:transport_down("receive: " .. tostring(err))
      end
    else
      ngx.sleep(max(0.001, wait))
    end
    self:_wake_waiters()
  end
  self.pump_done = true
  self:_wake_waiters()
  return true
end

-- start_pump(): runs the connection in a light thread of the current
-- request or timer, so that engine timers (automatic lock renewal, token
-- refresh) fire while the caller does other work, and several light
-- threads can use the connection at once (each blocking call then waits
-- on a semaphore). close() stops it.
function _M:start_pump()
  local c = self.client
  if not c then return nil, "not connected" end
  if self.pump_thread and not self.pump_done then return 1 end
  self:_ensure_sem()
  self.pump_stop, self.pump_done = false, false
  local th, err = ngx.thread.spawn(function()
    local ok, e = pcall(self._pump_loop, self, c)
    if not ok then
      -- never leave waiters hanging: they finish by pumping themselves
      ngx.log(ngx.ERR, "servicebus: pump thread failed: ", e)
      self.pump_done = true
      self:_wake_waiters()
    end
    return ok
  end)
  if not th then return nil, err end
  self.pump_thread = th
  return 1
end

-- connect(connection_string [, opts]) -> 1, or nil, err, code
-- opts: every option of servicebus.new (retry_total, operation_timeout,
-- logging, logger, ...) plus ssl_verify (default true), server_name,
-- connect_host (dial this address instead of the endpoint's).
function _M:connect(conn_str, opts)
  if self.client and not self.client:is_closed() then
    return nil, "already connected"
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.connection_string = conn_str
  o.host = true
  local cs, err, code = sb.parse_connection_string(conn_str)
  if not cs then return nil, err, code end
  self.tls = not cs.use_development_emulator
  if o.use_tls ~= nil then self.tls = o.use_tls end
  -- TLS is ours (sslhandshake), never the engine's; keep the TLS port.
  o.use_tls = false
  -- The port: the caller's, else the endpoint's, else the TLS default.
  o.port = o.port or cs.port
  if self.tls and not o.port then
    o.port = o.transport == "websocket" and 443 or 5671
  end
  self.ssl_verify = o.ssl_verify
  self.server_name = o.server_name or cs.host
  self.connect_host = o.connect_host
  o.ssl_verify, o.server_name, o.connect_host = nil, nil, nil
  local c
  c, err, code = sb.new(o)
  if not c then return nil, err, code end
  self.client = c
  c:set_host_wait(function(cl, op, timeout) return self:_pump(op, timeout, cl) end)
  local ok
  ok, err, code = c:open()
  if not ok then
    c:_free()
    self:_close_socket()
    self.client = nil
    return nil, err, code
  end
  return 1
end

-- close() -> 1: closes the AMQP connection gracefully, then the socket.
function _M:close()
  local c = self.client
  if not c then return nil, "not connected" end
  self.client = nil
  local ok, err, code = c:close()
  if self.pump_thread then
    self.pump_stop = true
    if not self.pump_done then ngx.thread.wait(self.pump_thread) end
    self.pump_thread = nil
  end
  self:_close_socket()
  if not ok then return nil, err, code end
  return 1
end

-- The underlying engine client (servicebus module object), or nil.
function _M:get_client()
  return self.client
end

------------------------------------------------------------------------
-- Background consumer: a handler per message inside an ngx.timer.at
-- timer, with lock renewal and settlement; stops on worker exit.
--
--   rsb.consumer({ connection_string = ..., queue = "queue.1",
--                  handler = function(msg) ... return true end })
--     :start()
--
-- The handler returns true (complete), false/nil (abandon), or raises
-- (abandon). Options: subscription, topic, mode, prefetch, batch (max
-- messages per receive, default 10), max_wait (s, default 1),
-- auto_renew (s: renew each message's lock while the handler runs),
-- on_error(err, code) (called on connection failures before a retry),
-- retry_delay (s, default 1).
------------------------------------------------------------------------
local Consumer = {}
Consumer.__index = Consumer

function _M.consumer(opts)
  assert(type(opts) == "table", "consumer options must be a table")
  assert(type(opts.handler) == "function", "consumer needs a handler")
  assert(opts.queue or (opts.topic and opts.subscription), "consumer needs a queue or topic + subscription")
  return setmetatable({ opts = opts, stats = { received = 0, completed = 0, abandoned = 0, errors = 0 } }, Consumer)
end

function Consumer:start()
  local ok, err = ngx.timer.at(0, function(premature) self:_run(premature) end)
  if not ok then return nil, err end
  self.running = true
  return true
end

function Consumer:stop()
  self.stopping = true
end

local function stopping(self)
  return self.stopping or ngx.worker.exiting()
end

function Consumer:_session()
  local o = self.opts
  local conn = _M.new()
  if o.timeouts then conn:set_timeouts(o.timeouts[1], o.timeouts[2], o.timeouts[3]) end
  local ok, err, code = conn:connect(o.connection_string, o.client_options)
  if not ok then return nil, err, code end
  local rx
  if o.queue then
    rx, err, code = conn:receiver(o.queue, { mode = o.mode, prefetch = o.prefetch })
  else
    rx, err, code = conn:receiver(o.topic, { subscription = o.subscription, mode = o.mode, prefetch = o.prefetch })
  end
  if not rx then conn:close(); return nil, err, code end
  -- a pump thread keeps lock renewal going while the handler runs
  conn:start_pump()
  self.connected = true
  while not stopping(self) do
    local msgs
    msgs, err, code = rx:receive(o.batch or 10, o.max_wait or 1)
    if not msgs then break end
    for _, msg in ipairs(msgs) do
      self.stats.received = self.stats.received + 1
      local locked = msg.settle_state == "unsettled"
      if locked and o.auto_renew then msg:auto_renew(o.auto_renew) end
      local pok, res = pcall(o.handler, msg, self)
      if locked and msg.settle_state == "unsettled" then
        if pok and res then
          if msg:complete() then self.stats.completed = self.stats.completed + 1 end
        else
          if not pok then ngx.log(ngx.ERR, "servicebus consumer handler: ", res) end
          if msg:abandon() then self.stats.abandoned = self.stats.abandoned + 1 end
        end
      end
    end
  end
  self.connected = false
  rx:close()
  conn:close()
  if err then return nil, err, code end
  return true
end

function Consumer:_run(premature)
  if premature then self.running = false; return end
  while not stopping(self) do
    local ok, err, code = self:_session()
    if ok or stopping(self) then break end
    self.stats.errors = self.stats.errors + 1
    self.last_error = { err, code }
    if self.opts.on_error then pcall(self.opts.on_error, err, code) end
    ngx.log(ngx.WARN, "servicebus consumer: ", err, " (", code, "); retrying")
    ngx.sleep(self.opts.retry_delay or 1)
  end
  self.running = false
end

------------------------------------------------------------------------
-- Worker-level sender: one timer-owned connection per worker; request
-- handlers hand messages over through a queue and an ngx.semaphore and
-- wait for their own result, so high request rates share one link.
--
--   local ws = rsb.worker_sender({ connection_string = ..., entity = "q" })
--   ws:start()                         -- in init_worker_by_lua*
--   local ok, err, code = ws:send(msg) -- in any request handler
------------------------------------------------------------------------
local WorkerSender = {}
WorkerSender.__index = WorkerSender

function _M.worker_sender(opts)
  local semaphore = require "ngx.semaphore"
  assert(type(opts) == "table" and opts.entity and opts.connection_string,
         "worker_sender needs connection_string and entity")
  return setmetatable({ opts = opts, queue = {}, wake = semaphore.new(),
                        max_batch = opts.max_batch or 100 }, WorkerSender)
end

function WorkerSender:start()
  local ok, err = ngx.timer.at(0, function(premature) self:_run(premature) end)
  if not ok then return nil, err end
  return true
end

-- send(msg | {msg, ...} [, timeout_s]) -> true, or nil, err, code
function WorkerSender:send(msg, timeout)
  local semaphore = require "ngx.semaphore"
  local item = { msg = msg, done = semaphore.new() }
  self.queue[#self.queue + 1] = item
  self.wake:post(1)
  local ok, err = item.done:wait(timeout or 30)
  if not ok then item.abandoned = true; return nil, "worker sender: " .. tostring(err), "timeout" end
  return item.res[1], item.res[2], item.res[3]
end

function WorkerSender:_run(premature)
  if premature then return end
  local o = self.opts
  while not ngx.worker.exiting() do
    local conn = _M.new()
    local ok, err, code = conn:connect(o.connection_string, o.client_options)
    local sender
    if ok then sender, err, code = conn:sender(o.entity) end
    if not sender then
      -- fail what waits, then retry
      local q = self.queue
      self.queue = {}
      for _, item in ipairs(q) do item.res = { nil, err, code }; item.done:post(1) end
      if ok then conn:close() end
      ngx.sleep(o.retry_delay or 1)
    else
      while not ngx.worker.exiting() do
        if #self.queue == 0 then self.wake:wait(1) end
        local q = self.queue
        self.queue = {}
        for _, item in ipairs(q) do
          if not item.abandoned then
            local r1, r2, r3 = sender:send(item.msg)
            item.res = { r1, r2, r3 }
            item.done:post(1)
            if not r1 and (r3 == "closed" or r3 == "connection") then err = r2 end
          end
        end
        if err then break end
      end
      conn:close()
    end
  end
end

return _M
