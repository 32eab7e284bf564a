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
