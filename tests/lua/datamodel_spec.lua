-- Values of any AMQP type: list and map application properties, amqp-sequence
-- bodies, and exact types given as their encoding (servicebus.amqp), sent
-- through the emulator and read back; the same on Lua 5.4 and LuaJIT.
local sb = require "servicebus"
local helper = require "helper"

-- Encodings (AMQP 1.0 types section) for servicebus.amqp().
local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                     math.floor(n / 256) % 256, n % 256)
end
local CHAR_E_ACUTE = "\115" .. be32(0xE9)          -- char U+00E9
local CHAR_G_CLEF = "\115" .. be32(0x1D11E)        -- char U+1D11E (4 UTF-8 bytes)
-- decimal32 123.45 = coefficient 12345, exponent -2: sign 0, combination
-- field for exponent 99 (bias 101) and a binary coefficient (BID encoding)
local DEC32 = "\116" .. be32(99 * 2 ^ 23 + 12345)
-- described value: descriptor symbol "x:t", value string "v"
local DESCRIBED = "\0" .. "\163\3x:t" .. "\161\1v"
local SYMBOL = "\163\5hello"

describe("data model", function()
  local ctx = helper.emulator_and_client(setup, teardown)

  local function round_trip(msg)
    local client, q = ctx.client, "queue.1"
    local tx = assert(client:sender(q))
    assert(tx:send(msg))
    tx:close()
    local rx = assert(client:receiver(q, { mode = "receive_and_delete" }))
    local got = assert(rx:receive(1, 5))
    rx:close()
    assert.are.equal(1, #got)
    return got[1]
  end

  it("list and map properties arrive as tables (null kept in lists)", function()
    local m = round_trip({
      body = "x",
      properties = {
        list = { 1, "two", true, 2.5, sb.null, { 3, 4 } },
        map = { a = 1, b = { c = "d" }, [7] = "seven" },
        empty = {},
        plain = 5,
      },
    })
    local p = m.properties
    assert.are.same({ 1, "two", true, 2.5, sb.null, { 3, 4 } }, p.list)
    assert.are.equal(6, #p.list)
    assert.are.same({ a = 1, b = { c = "d" }, [7] = "seven" }, p.map)
    assert.are.same({}, p.empty)
    assert.are.equal(5, p.plain)
    if math.type then assert.are.equal("integer", math.type(p.list[1])) end
  end)

  it("char, decimal, described and symbol values arrive converted", function()
    local m = round_trip({
      body = "x",
      properties = {
        c = sb.amqp(CHAR_E_ACUTE), g = sb.amqp(CHAR_G_CLEF), d = sb.amqp(DEC32),
        s = sb.amqp(SYMBOL), desc = sb.amqp(DESCRIBED),
        inside = { sb.amqp(CHAR_E_ACUTE), sb.amqp(DEC32) },
      },
    })
    local p = m.properties
    assert.are.equal("\195\169", p.c)             -- é in UTF-8
    assert.are.equal("\240\157\132\158", p.g)     -- U+1D11E in UTF-8
    assert.are.equal("12345E-2", p.d)
    assert.are.equal("hello", p.s)
    assert.are.same({ descriptor = "x:t", value = "v" }, p.desc)
    assert.are.same({ "\195\169", "12345E-2" }, p.inside)
  end)

  it("an amqp-sequence body round-trips as a marked array of sections", function()
    local body = sb.sequence({ 1, "two", { 3 } }, { true, sb.null })
    assert.is_true(sb.is_sequence(body))
    local m = round_trip({ body = body, message_id = "seq-1" })
    assert.are.equal("sequence", m.body_type)
    assert.is_true(sb.is_sequence(m.body))
    assert.are.same({ { 1, "two", { 3 } }, { true, sb.null } }, m.body)
    local sections = m.body_sections
    assert.is_false(sb.is_sequence(sections))
    assert.are.same({ { 1, "two", { 3 } }, { true, sb.null } }, sections)
    -- a received sequence body can be sent again as it is
    local again = round_trip({ body = m.body })
    assert.are.same(m.body, again.body)
  end)

  it("an amqp-value body of a compound type arrives as a table", function()
    -- a list [1, "a"] as an amqp-value: list8, size, count, smallint 1, str8 "a"
    local m = round_trip({ body = sb.amqp("\192\6\2\84\1\161\1a") })
    assert.are.equal("value", m.body_type)
    assert.are.same({ 1, "a" }, m.body)
  end)

  it("messages built locally read back the same, copies included", function()
    local m = sb.message({ body = sb.sequence({ "a" }), properties = { l = { 1, 2 } } })
    assert.are.equal("sequence", m.body_type)
    assert.are.same({ { "a" } }, m.body)
    assert.are.same({ 1, 2 }, m.properties.l)
    local c = m:copy()
    assert.are.same({ { "a" } }, c.body)
    assert.are.same({ 1, 2 }, c.properties.l)
  end)

  it("what cannot be sent raises", function()
    assert.has_error(function() sb.amqp("\192\6") end)             -- truncated list
    assert.has_error(function() sb.amqp("\161\1aa") end)           -- trailing byte
    assert.has_error(function() sb.message({ properties = { f = print } }) end)
    assert.has_error(function() sb.message({ properties = { l = { print } } }) end)
    local cyc = {}
    cyc[1] = cyc
    assert.has_error(function() sb.message({ properties = { c = cyc } }) end)
    assert.has_error(function() sb.message({ body = sb.sequence() }) end)
    assert.has_error(function() sb.message({ body = sb.sequence({ a = 1 }) }) end)
    assert.has_error(function() sb.sequence("not a table") end)
  end)
end)
