-- Receives COUNT messages from QUEUE and completes them. Usage: lua receive.lua QUEUE COUNT
local servicebus = require "servicebus"
local queue, count = arg[1], tonumber(arg[2])

local client = assert(servicebus.from_connection_string(os.getenv("SERVICEBUS_CONNECTION_STR")))
local receiver = client:receiver(queue)
local got = 0
while got < count do
  local batch = assert(receiver:receive(count - got, 5))
  if #batch == 0 then error(("lua: only %d of %d messages arrived"):format(got, count)) end
  for _, msg in ipairs(batch) do
    local props = {}
    for k, v in pairs(msg.properties or {}) do props[#props + 1] = k .. "=" .. tostring(v) end
    table.sort(props)
    print(("lua received   %s: %s  (seq %d, props {%s})"):format(msg.message_id, msg.body,
          msg.sequence_number, table.concat(props, ", ")))
    assert(msg:complete())
    got = got + 1
  end
end
receiver:close()
client:close()
