-- app.lua: the nginx application the OpenResty spec drives. Endpoints:
--   /send?queue=Q&body=B&id=I     per-request connection, sends one message
--   /receive?queue=Q&wait=S       per-request connection, receives one and
--                                 completes it ("none" after wait seconds)
--   /wsend?body=B&id=I            through the worker-level sender (queue "test-queue")
--   /ping                         answers at once (responsiveness check)
--   /consumed                     what the background consumer settled
-- The background consumer (queue "demo") starts from init_worker_by_lua
-- through ngx.timer.at and stores each body in the shared dict "consumed".
local rsb = require "resty.servicebus"

local M = {}
local conn_str = os.getenv("SBUS_CONN")
local wsender

function M.init_worker()
  local consumer = rsb.consumer({
    connection_string = conn_str,
    queue = "demo",
    max_wait = 0.5,
    auto_renew = 60,
    handler = function(msg)
      local dict = ngx.shared.consumed
      local n = dict:incr("n", 1, 0)
      dict:set("body:" .. n, msg.body)
      dict:set("id:" .. n, msg.message_id or "")
      return true
    end,
  })
  assert(consumer:start())
  -- a slow handler on a queue with a 2 s lock: the pump thread must keep
  -- the lock renewed while the handler sleeps 3.5 s (two renewals needed)
  assert(rsb.consumer({
    connection_string = conn_str,
    queue = "ngx-short-lock",
    max_wait = 0.5,
    auto_renew = 60,
    handler = function(msg)
      local calls = ngx.shared.consumed:incr("slow_calls", 1, 0)
      ngx.sleep(3.5)
      ngx.shared.consumed:set("slow", msg.body .. ":" .. calls)
      return true
    end,
  }):start())
  wsender = rsb.worker_sender({ connection_string = conn_str, entity = "test-queue" })
  assert(wsender:start())
end

local function fail(status, ...)
  ngx.status = status
  ngx.say(...)
  return ngx.exit(status)
end

local function connect()
  local sb = rsb.new()
  sb:set_timeouts(5000, 5000, 10000)
  local ok, err, code = sb:connect(conn_str)
  if not ok then return fail(502, "connect: ", err, " (", code, ")") end
  return sb
end

function M.send()
  local args = ngx.req.get_uri_args()
  local sb = connect()
  local sender, err, code = sb:sender(args.queue)
  if not sender then return fail(502, "sender: ", err, " (", code, ")") end
  local ok
  ok, err, code = sender:send({ body = args.body, message_id = args.id,
                                properties = { via = "openresty" } })
  if not ok then return fail(502, "send: ", err, " (", code, ")") end
  sb:close()
  ngx.say("sent")
end

function M.receive()
  local args = ngx.req.get_uri_args()
  local sb = connect()
  local rx, err, code = sb:receiver(args.queue)
  if not rx then return fail(502, "receiver: ", err, " (", code, ")") end
  local msgs
  msgs, err, code = rx:receive(1, tonumber(args.wait) or 5)
  if not msgs then return fail(502, "receive: ", err, " (", code, ")") end
  if #msgs == 0 then
    sb:close()
    return ngx.say("none")
  end
  local m = msgs[1]
  local ok
  ok, err, code = m:complete()
  if not ok then return fail(502, "complete: ", err, " (", code, ")") end
  sb:close()
  ngx.say(m.body, "|", m.message_id or "", "|", (m.properties or {}).via or "")
end

-- /tls?queue=Q : a round trip over TLS done by the cosocket (sslhandshake
-- against the emulator's amqps listener, verified with its CA)
function M.tls()
  local args = ngx.req.get_uri_args()
  local sb = rsb.new()
  sb:set_timeouts(5000, 5000, 10000)
  local env = args.ws and "SBUS_CONN_WSS" or "SBUS_CONN_TLS"
  local ok, err, code = sb:connect(os.getenv(env), { transport = args.ws and "websocket" or nil })
  if not ok then return fail(502, "connect: ", err, " (", code, ")") end
  local sender = assert(sb:sender(args.queue))
  ok, err, code = sender:send({ body = args.ws and "over wss" or "over tls" })
  if not ok then return fail(502, "send: ", err, " (", code, ")") end
  local rx = assert(sb:receiver(args.queue, { mode = "receive_and_delete" }))
  local msgs = rx:receive(1, 5) or {}
  sb:close()
  ngx.say(msgs[1] and msgs[1].body or "none", "|", sb.tls and "tls" or "plain")
end

function M.wsend()
  local args = ngx.req.get_uri_args()
  local ok, err, code = wsender:send({ body = args.body, message_id = args.id })
  if not ok then return fail(502, "wsend: ", err, " (", code, ")") end
  ngx.say("sent")
end

-- /shared: two light threads share one connection without a pump thread:
-- A waits 2 s on an empty queue while B sends and receives on another.
function M.shared()
  local sb = connect()
  local order = {}
  local a = ngx.thread.spawn(function()
    local rx = assert(sb:receiver("queue.1"))
    local msgs = assert(rx:receive(1, 2))
    order[#order + 1] = "A"
    return #msgs == 0 and "none" or msgs[1].body
  end)
  local b = ngx.thread.spawn(function()
    local tx = assert(sb:sender("test-queue-2"))
    assert(tx:send("shared"))
    local rx = assert(sb:receiver("test-queue-2", { mode = "receive_and_delete" }))
    local msgs = assert(rx:receive(1, 5))
    order[#order + 1] = "B"
    return msgs[1] and msgs[1].body or "none"
  end)
  local _, ra = ngx.thread.wait(a)
  local _, rb = ngx.thread.wait(b)
  local connects = sb.connects
  sb:close()
  ngx.say("A:", tostring(ra), " B:", tostring(rb), " order:", table.concat(order), " sockets:", connects)
end

function M.slow()
  ngx.say(ngx.shared.consumed:get("slow") or "")
end

function M.consumed()
  local dict = ngx.shared.consumed
  local n = dict:get("n") or 0
  local out = {}
  for i = 1, n do out[#out + 1] = dict:get("body:" .. i) end
  ngx.say(table.concat(out, ","))
end

return M
