/*
 * compat.h - one Lua C API for Lua 5.4 and LuaJIT (Lua 5.1 API).
 *
 * servicebus.c is written against the Lua 5.3/5.4 API. When it is compiled
 * against LuaJIT (LUA_VERSION_NUM 501), Debian's lua-compat-5.3
 * (lua-compat53-dev, /usr/include/lua5.1/compat-5.3.h) fills the gap:
 * lua_setuservalue on top of fenv, luaL_setfuncs, lua_isinteger, ... Its
 * functions are compiled static into the module (no COMPAT53_PREFIX), so
 * two modules in one process never clash.
 *
 * The few things compat-5.3 does not cover are defined below.
 */
#ifndef SERVICEBUS_LUA_COMPAT_H
#define SERVICEBUS_LUA_COMPAT_H

/* compat-5.3.c calls strerror_r, a POSIX function that -std=c11 hides. */
#if !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 503
#include "compat-5.3.h"
#endif

/* Full userdata with one user value (5.4 has several; we need one). */
#if LUA_VERSION_NUM >= 504
#define sbl_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 1)
#else
#define sbl_newuserdata(L, sz) lua_newuserdata((L), (sz))
#endif

#endif /* SERVICEBUS_LUA_COMPAT_H */
