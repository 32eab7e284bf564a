-- luv_two_clients.lua: the step API under libuv (Debian's lua-luv). Two
-- clients in one loop: one waits for a message while the other sends it.
--
--   SERVICEBUS_CONNECTION_STR=... LUA_PATH='bindings/lua/?.lua;;' lua5.4 luv_two_clients.lua
local uv = require "luv"
local sbl = require "servicebus.luv"

local conn_str = assert(os.getenv("SERVICEBUS_CONNECTION_STR"))
local loop = sbl.new()
local a, open_a = assert(loop:client(conn_str))
local b, open_b = assert(loop:client(conn_str))

loop:spawn(function(await)
  assert(await(open_a))
  local rx = assert(await(loop:receiver(a, "queue.1")))
  print("a: waiting (the loop keeps running)")
  local msgs = assert(await(rx:start_receive(1, 10)))
  for _, m in ipairs(msgs) do
    print("a: got " .. m.body)
    assert(await(m:start_complete()))
  end
  await(loop:close(a))
end)

loop:spawn(function(await)
  assert(await(open_b))
  local tx = assert(await(loop:sender(b, "queue.1")))
  await(loop:sleep(1))
  assert(await(tx:start_send("hello across the loop")))
  print("b: sent")
  await(loop:close(b))
end)

uv.run()
