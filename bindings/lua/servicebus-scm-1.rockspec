-- The servicebus Lua module (libsbus engine + C glue) for Lua 5.4 and
-- LuaJIT/OpenResty. Build and install from a checkout of the repository:
--
--   luarocks --lua-version=5.4 make bindings/lua/servicebus-scm-1.rockspec
--   luarocks --lua-version=5.1 make bindings/lua/servicebus-scm-1.rockspec \
--            LUA_INCDIR=/usr/include/luajit-2.1           # LuaJIT
--
-- Needs (Debian): cmake, gcc, pkg-config, libqpid-proton11-dev, libssl-dev,
-- libjansson-dev (the emulator is built alongside), liblua5.4-dev or
-- libluajit2-5.1-dev, lua-compat53-dev.
rockspec_format = "3.0"
package = "servicebus"
version = "scm-1"
source = {
  -- `luarocks make` builds the checkout it is run from; nothing is fetched
  url = "git+file://.",
}
description = {
  summary = "Azure Service Bus client (AMQP 1.0) for Lua 5.4, LuaJIT and OpenResty",
  detailed = [[
    One C engine (libsbus, on Qpid Proton-C and OpenSSL) with a thin Lua
    binding: blocking calls, a step API for event loops (luv, cqueues) and
    resty.servicebus for OpenResty cosockets. Works against Azure Service
    Bus and the bundled sbus-emulator.
  ]],
  license = "MIT",
  labels = { "azure", "servicebus", "amqp", "openresty" },
}
dependencies = {
  "lua >= 5.1",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    SBUS_LUA_INCDIR = "$(LUA_INCDIR)",
    SBUS_LUA_CMOD_DIR = "$(LIBDIR)",
    SBUS_LUA_LMOD_DIR = "$(LUADIR)",
  },
}
