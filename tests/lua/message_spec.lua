-- Messages as values: building, reading and converting, with no broker.
local sb = require "servicebus"

describe("message objects", function()
  it("builds from a table and reads every field back", function()
    local m = sb.message({
      body = "b", message_id = "id-1", correlation_id = "c", content_type = "t",
      subject = "s", to = "to", reply_to = "r", reply_to_session_id = "rs",
      session_id = "sess", partition_key = "sess", time_to_live = 1.5,
      scheduled_enqueue_time = 2000000000,
      properties = { a = 1, b = "two", c = true, d = 0.25, e = sb.null },
    })
    assert.are.equal("b", m.body)
    assert.are.equal("data", m.body_type)
    assert.are.equal("id-1", m.message_id)
    assert.are.equal("c", m.correlation_id)
    assert.are.equal("t", m.content_type)
    assert.are.equal("s", m.subject)
    assert.are.equal("s", m.label)
    assert.are.equal("to", m.to)
    assert.are.equal("r", m.reply_to)
    assert.are.equal("rs", m.reply_to_session_id)
    assert.are.equal("sess", m.session_id)
    assert.are.equal("sess", m.partition_key)
    assert.are.equal(1.5, m.time_to_live)
    assert.are.equal(2000000000, m.scheduled_enqueue_time)
    local p = m.properties
    assert.are.equal(1, p.a)
    assert.are.equal("two", p.b)
    assert.are.equal(true, p.c)
    assert.are.equal(0.25, p.d)
    assert.are.equal(sb.null, p.e)
    assert.is_nil(m.sequence_number)
    assert.is_nil(m.lock_token)
    assert.is_true(m.size > 0)
  end)

  it("builds from a string", function()
    local m = sb.message("plain")
    assert.are.equal("plain", m.body)
    assert.is_nil(m.message_id)
  end)

  it("is writable field by field", function()
    local m = sb.message("x")
    m.message_id = "later"
    m.body = "y"
    m.properties = { k = "v" }
    assert.are.equal("later", m.message_id)
    assert.are.equal("y", m.body)
    assert.are.same({ k = "v" }, m.properties)
    m.message_id = nil
    assert.is_nil(m.message_id)
    assert.has_error(function() m.sequence_number = 3 end)
    assert.has_error(function() m.nonsense = 3 end)
  end)

  it("keeps several data sections", function()
    local m = sb.message({ body = { "ab", "cd" } })
    assert.are.same({ "ab", "cd" }, m.body_sections)
    assert.are.equal("abcd", m.body)
  end)

  it("carries an amqp-value body", function()
    local m = sb.message({ body = 42 })
    assert.are.equal("value", m.body_type)
    assert.are.equal(42, m.body)
  end)

  it("copies", function()
    local m = sb.message({ body = "c", message_id = "m1" })
    local c = m:copy()
    c.message_id = "m2"
    assert.are.equal("m1", m.message_id)
    assert.are.equal("m2", c.message_id)
    assert.are.equal("c", c.to_table(c).body)
  end)

  it("refuses what the engine refuses", function()
    assert.has_error(function() sb.message({ message_id = ("x"):rep(129) }) end)
    assert.has_error(function() sb.message({ dead_letter_reason = "no" }) end)
    assert.has_error(function() sb.message(12) end)
  end)

  it("cannot be settled when it was not received", function()
    local m = sb.message("x")
    assert.has_error(function() m:complete() end)
  end)
end)

describe("module functions", function()
  it("parses connection strings", function()
    local t = assert(sb.parse_connection_string(
      "Endpoint=sb://localhost:5672;SharedAccessKeyName=K;SharedAccessKey=V;UseDevelopmentEmulator=true;"))
    assert.are.equal("localhost", t.host)
    assert.are.equal(5672, t.port)
    assert.are.equal("K", t.shared_access_key_name)
    assert.is_true(t.use_development_emulator)
    local n, err, code = sb.parse_connection_string("nonsense")
    assert.is_nil(n)
    assert.is_string(err)
    assert.are.equal("bad-connection-string", code)
  end)

  it("signs SAS tokens", function()
    local tok = assert(sb.sas_token("sb://x/q", "K", "V", 2000000000))
    assert.matches("^SharedAccessSignature ", tok)
    assert.matches("se=2000000000", tok)
    assert.matches("skn=K", tok)
  end)

  it("names the engine's error codes", function()
    assert.are.equal(-26, sb.codes["lock-lost"])
    assert.are.equal(-21, sb.codes.unauthorized)
    assert.are.equal(-24, sb.codes.timeout)
    assert.is_string(sb.strerror("lock-lost"))
    local code = sb.condition_code("com.microsoft:message-lock-lost")
    assert.are.equal("lock-lost", code)
    local conds = sb.conditions()
    assert.is_true(#conds > 0)
    assert.is_string(conds[1].condition)
  end)

  it("reports versions", function()
    assert.are.equal(sb.version, sb.engine_version())
  end)
end)
