-- sessions.lua: ordered processing with a session receiver and its state.
--
--   SERVICEBUS_CONNECTION_STR=... lua5.4 sessions.lua [QUEUE]
local sb = require "servicebus"

local client = assert(sb.from_connection_string(assert(os.getenv("SERVICEBUS_CONNECTION_STR"))))
local queue = arg[1] or "session-queue"

local sender = assert(client:sender(queue))
assert(sender:send({
  { body = "step 1", session_id = "order-42" },
  { body = "step 2", session_id = "order-42" },
}))

local rx = assert(client:session_receiver(queue, { session_id = "order-42" }))
print("locked session " .. rx:session_id() .. " until " .. os.date("!%H:%M:%S", math.floor(rx:locked_until())))
rx:auto_renew(300, function(_, err, code) print("session lock lost: " .. err .. " (" .. code .. ")") end)
for msg in rx:messages(1) do
  print("processing " .. msg.body)
  assert(rx:set_state(msg.body .. " done"))
  assert(msg:complete())
end
print("state: " .. tostring(rx:get_state()))
rx:close()
client:close()
