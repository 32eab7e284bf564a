-- app.lua for examples/lua/openresty/nginx.conf.
local rsb = require "resty.servicebus"
local M = {}
local conn_str = os.getenv("SERVICEBUS_CONNECTION_STR")

-- A background consumer: one per worker, in an ngx.timer.at timer (the
-- cosocket API is not available in init_worker_by_lua itself).
function M.init_worker()
  rsb.consumer({
    connection_string = conn_str,
    queue = "demo",
    auto_renew = 300,
    handler = function(msg)
      ngx.log(ngx.INFO, "consumed ", msg.message_id, ": ", msg.body)
      return true -- complete; false or an error abandons
    end,
  }):start()
end

-- A connection per request: fine for low rates (see rsb.worker_sender).
function M.send()
  local sb = rsb.new()
  sb:set_timeouts(5000, 5000, 30000)
  local ok, err = sb:connect(conn_str)
  if not ok then ngx.status = 502; return ngx.say("connect: ", err) end
  local sender = assert(sb:sender("queue.1"))
  ok, err = sender:send({ body = ngx.var.arg_body or "hello from nginx" })
  sb:close()
  ngx.say(ok and "sent" or ("failed: " .. err))
end

function M.receive()
  local sb = rsb.new()
  local ok, err = sb:connect(conn_str)
  if not ok then ngx.status = 502; return ngx.say("connect: ", err) end
  local rx = assert(sb:receiver("queue.1"))
  local msgs = rx:receive(1, 5) or {}   -- yields; the worker keeps serving
  for _, m in ipairs(msgs) do
    ngx.say(m.body)
    m:complete()
  end
  if #msgs == 0 then ngx.say("(nothing within 5 s)") end
  sb:close()
end

return M
