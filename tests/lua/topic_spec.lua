-- Topics and subscriptions.
local helper = require "helper"

describe("topics", function()
  local emu, client
  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("delivers a message sent to a topic to its subscription", function()
    helper.drain(client, "topic.1", { subscription = "all" })
    local sender = assert(client:get_topic_sender("topic.1"))
    local id = helper.unique("topic")
    assert(sender:send({ body = "to all", message_id = id }))
    local rx = assert(client:subscription_receiver("topic.1", "all"))
    local m = assert(rx:receive(1, 5))[1]
    assert.is_truthy(m, "nothing arrived on all")
    assert.are.equal(id, m.message_id)
    assert(m:complete())
    rx:close()
    sender:close()
  end)
end)

describe("EntityPath", function()
  local emu
  setup(function() emu = helper.start_emulator() end)
  teardown(function() if emu then emu:stop() end end)

  it("is the default entity of senders and receivers", function()
    local sb = require "servicebus"
    local cs = emu.connection_string:gsub(";$", "") .. ";EntityPath=test-queue-2"
    local client = assert(sb.from_connection_string(cs))
    assert.are.equal("test-queue-2", client:entity_path())
    helper.drain(client, "test-queue-2")
    local s = assert(client:sender())
    assert(s:send("ep"))
    local rx = assert(client:receiver({ mode = "receive_and_delete" }))
    local got = assert(rx:receive(1, 5))
    assert.are.equal("ep", got[1] and got[1].body)
    client:close()
    local plain = helper.client(emu)
    assert.has_error(function() plain:sender() end)
    plain:close()
  end)
end)
