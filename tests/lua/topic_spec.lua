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

describe("subscription filters", function()
  local emu, client
  setup(function()
    emu = helper.start_emulator()
    client = helper.client(emu)
  end)
  teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)

  it("fans out by correlation and SQL filters (with the rule's action)", function()
    for _, sub in ipairs({ "all", "json-only", "red" }) do
      helper.drain(client, "topic.1", { subscription = sub })
    end
    local s = assert(client:sender("topic.1"))
    assert(s:send({
      { body = "plain", message_id = "p" },
      { body = "{}", message_id = "j", content_type = "application/json" },
      { body = "r", message_id = "r", properties = { color = "red" } },
    }))
    local function ids(sub)
      local rx = assert(client:subscription_receiver("topic.1", sub, { mode = "receive_and_delete" }))
      local got, props = {}, {}
      for m in rx:messages(1) do
        got[#got + 1] = m.message_id
        props[m.message_id] = m.properties
      end
      rx:close()
      table.sort(got)
      return got, props
    end
    assert.are.same({ "j", "p", "r" }, (ids("all")))
    assert.are.same({ "j" }, (ids("json-only")))
    local red, props = ids("red")
    assert.are.same({ "r" }, red)
    assert.are.equal("red", props.r.routed)
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
