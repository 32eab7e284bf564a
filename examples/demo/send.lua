-- Sends COUNT messages with TEXT to QUEUE. Usage: lua send.lua QUEUE TEXT COUNT
local servicebus = require "servicebus"
local queue, text, count = arg[1], arg[2], tonumber(arg[3])

local client = assert(servicebus.from_connection_string(os.getenv("SERVICEBUS_CONNECTION_STR")))
local sender = client:sender(queue)
for i = 1, count do
  local id = "lua-" .. i
  assert(sender:send({ body = text .. " #" .. i, message_id = id,
                       properties = { origin = "lua", n = i } }))
  print(("lua sent       %s: %s #%d"):format(id, text, i))
end
sender:close()
client:close()
