-- send_receive.lua: the quickstart. Sends three messages to a queue and
-- receives them back, blocking on the engine's POSIX driver.
--
--   SERVICEBUS_CONNECTION_STR='Endpoint=sb://localhost:5672;...' lua5.4 send_receive.lua [QUEUE]
local sb = require "servicebus"

local conn_str = assert(os.getenv("SERVICEBUS_CONNECTION_STR"), "set SERVICEBUS_CONNECTION_STR")
local queue = arg[1] or "queue.1"

local client = assert(sb.from_connection_string(conn_str))
local sender = assert(client:sender(queue))
for i = 1, 3 do
  assert(sender:send({ body = "hello #" .. i, message_id = "example-" .. i,
                       properties = { n = i } }))
end
print("sent 3 messages to " .. queue)

local receiver = assert(client:receiver(queue))        -- peek-lock
for msg in receiver:messages(2) do                      -- stops after 2 s of silence
  print(("received %s: %s (seq %d, delivery %d)"):format(
    msg.message_id, msg.body, msg.sequence_number, msg.delivery_count))
  local ok, err, code = msg:complete()
  if not ok then print("complete failed: " .. err .. " (" .. code .. ")") end
end

receiver:close()
sender:close()
client:close()
