-- docs/lua.md names every public method and function of the module (a
-- method added without documentation fails here). Mirrors
-- tests/python/test_docs.py.
local sb = require "servicebus"
local helper = require "helper"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function names_of(t, out, prefix)
  for k, v in pairs(t) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" then
      out[#out + 1] = prefix .. k
    end
  end
end

describe("docs/lua.md", function()
  it("mentions every public function and method", function()
    local doc = read(helper.root .. "/docs/lua.md")
    local reg = debug.getregistry()
    local names = {}
    names_of(sb, names, "")
    for _, mt in ipairs({ "servicebus.client", "servicebus.sender", "servicebus.receiver",
                          "servicebus.batch" }) do
      names_of(reg[mt].__index, names, "")
    end
    -- messages and ops are userdata whose __index function finds the
    -- methods in its first upvalue
    for _, mt in ipairs({ "servicebus.message", "servicebus.op" }) do
      local _, methods = debug.getupvalue(reg[mt].__index, 1)
      assert.are.equal("table", type(methods))
      names_of(methods, names, "")
    end
    local missing = {}
    for _, n in ipairs(names) do
      if not doc:find("%f[%w_]" .. n .. "%f[^%w_]") then missing[#missing + 1] = n end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)
