-- faults_app.lua: the nginx application faults_spec.lua drives. Every
-- connection goes to $SBUS_CONN, which points at a TCP relay in front of the
-- emulator (tests/reliability/relay.py), so the spec can cut connections,
-- inject broker faults and restart the broker under a running worker.
--
--   /ping                            answers at once (is the worker free?)
--   /send?queue=Q&body=B[&busy=1]    per-request connection, sends one message
--                                    (busy=1: retry_total 3, backoff 0.3 s doubling)
--   /receive?queue=Q&wait=S          per-request connection, receives and
--                                    completes at most one ("none" if empty)
--   /wsend?body=B                    through the worker-level sender (queue "demo")
--   /seen?body=B                     how often the consumer's handler got B
--   /consumer                        the consumer's stats and error codes
--   /stream?queue=Q&n=N&pace=S&tag=T one connection for the whole request:
--                                    sends N messages one by one, receiving and
--                                    completing alongside, then waits for the
--                                    rest; reports what it saw
--
-- A failure is answered 502 with "ERR|<type of err>|<code>|<err>": the spec
-- checks that errors surface as nil, msg, code (two strings).
local rsb = require "resty.servicebus"

local M = {}
local conn_str = os.getenv("SBUS_CONN")
-- fast retries: a cut or a restart is noticed and repaired within seconds
local FAST = { retry_total = 3, retry_backoff = 0.2, retry_backoff_max = 1, operation_timeout = 10 }
local wsender

local function note_error(kind, code)
  local dict = ngx.shared.faults
  local n = dict:incr("errors:" .. kind, 1, 0)
  dict:set("error:" .. kind .. ":" .. n, tostring(code))
end

function M.init_worker()
  assert(rsb.consumer({
    connection_string = conn_str,
    client_options = FAST,
    queue = "demo",
    max_wait = 0.5,
    retry_delay = 0.2,
    handler = function(msg)
      ngx.shared.faults:incr("seen:" .. tostring(msg.body), 1, 0)
      return true
    end,
    on_error = function(_, code) note_error("consumer", code) end,
  }):start())
  wsender = rsb.worker_sender({ connection_string = conn_str, entity = "demo",
                                client_options = FAST, retry_delay = 0.2 })
  assert(wsender:start())
end

local function fail(what, err, code)
  ngx.status = 502
  ngx.say("ERR|", type(err), "|", tostring(code), "|", what, ": ", tostring(err))
  return ngx.exit(502)
end

local function connect(opts)
  local sb = rsb.new()
  sb:set_timeouts(5000, 5000, 10000)
  local ok, err, code = sb:connect(conn_str, opts or FAST)
  if not ok then return nil, err, code end
  return sb
end

function M.ping()
  ngx.say("pong")
end

function M.send()
  local args = ngx.req.get_uri_args()
  local opts = FAST
  if args.busy then
    opts = { retry_total = 3, retry_backoff = 0.3, retry_backoff_max = 2, operation_timeout = 10 }
  end
  local sb, err, code = connect(opts)
  if not sb then return fail("connect", err, code) end
  local sender
  sender, err, code = sb:sender(args.queue)
  if not sender then sb:close(); return fail("sender", err, code) end
  local ok
  ok, err, code = sender:send({ body = args.body })
  sb:close()
  if not ok then return fail("send", err, code) end
  ngx.say("sent")
end

function M.receive()
  local args = ngx.req.get_uri_args()
  local sb, err, code = connect()
  if not sb then return fail("connect", err, code) end
  local rx
  rx, err, code = sb:receiver(args.queue)
  if not rx then sb:close(); return fail("receiver", err, code) end
  local msgs
  msgs, err, code = rx:receive(1, tonumber(args.wait) or 2)
  if not msgs then sb:close(); return fail("receive", err, code) end
  local m = msgs[1]
  if m then
    local ok
    ok, err, code = m:complete()
    if not ok then sb:close(); return fail("complete", err, code) end
  end
  sb:close()
  ngx.say(m and m.body or "none")
end

function M.wsend()
  local ok, err, code = wsender:send({ body = ngx.req.get_uri_args().body }, 20)
  if not ok then return fail("wsend", err, code) end
  ngx.say("sent")
end

function M.seen()
  ngx.say(ngx.shared.faults:get("seen:" .. tostring(ngx.req.get_uri_args().body)) or 0)
end

function M.consumer()
  local dict = ngx.shared.faults
  local codes = {}
  for i = 1, dict:get("errors:consumer") or 0 do codes[#codes + 1] = dict:get("error:consumer:" .. i) end
  ngx.say("errors=", table.concat(codes, ","))
end

-- /stream: one connection carries a whole stream while the spec cuts it.
-- Reports "sent=N got=N missing=N dups=N errors=<code,...> bad=<n>" where
-- errors are every nil, msg, code any call returned (bad counts those whose
-- msg or code was not a string).
function M.stream()
  local args = ngx.req.get_uri_args()
  local n, pace, tag = tonumber(args.n) or 50, tonumber(args.pace) or 0.1, args.tag or "s"
  local sb, err, code = connect()
  if not sb then return fail("connect", err, code) end
  local tx, rx
  tx, err, code = sb:sender(args.queue)
  if not tx then sb:close(); return fail("sender", err, code) end
  rx, err, code = sb:receiver(args.queue)
  if not rx then sb:close(); return fail("receiver", err, code) end
  local sent, seen, errors, bad = {}, {}, {}, 0
  local function note(what, e, c)
    errors[#errors + 1] = what .. ":" .. tostring(c)
    if type(e) ~= "string" or type(c) ~= "string" then bad = bad + 1 end
  end
  local function drain(wait)
    local msgs, e, c = rx:receive(20, wait)
    if not msgs then note("receive", e, c); return 0 end
    for _, m in ipairs(msgs) do
      seen[m.body] = (seen[m.body] or 0) + 1
      local ok, e2, c2 = m:complete()
      if not ok then note("complete", e2, c2) end
    end
    return #msgs
  end
  for i = 1, n do
    local body = tag .. "-" .. i
    local ok, e, c = tx:send({ body = body })
    if ok then sent[#sent + 1] = body else note("send", e, c) end
    drain(0.01)
    ngx.sleep(pace)
  end
  -- the rest: until everything sent was seen (bounded)
  local deadline = ngx.now() + 30
  while ngx.now() < deadline do
    local missing = 0
    for _, b in ipairs(sent) do if not seen[b] then missing = missing + 1 end end
    if missing == 0 then break end
    drain(0.5)
  end
  local missing, got, dups = 0, 0, 0
  for _, b in ipairs(sent) do if not seen[b] then missing = missing + 1 end end
  for _, k in pairs(seen) do got = got + 1; dups = dups + k - 1 end
  sb:close()
  ngx.say(("sent=%d got=%d missing=%d dups=%d errors=%s bad=%d connects=%d"):format(
    #sent, got, missing, dups, table.concat(errors, ","), bad, sb.connects or 0))
end

return M
