/*
 * libFuzzer target: the imm.core bindings (src/imm_core.c and everything
 * below it, json_encode and number_text included) called with argument
 * values of any type, not only the strings
 * and tables the Lua layer passes: nil, booleans, NaN, infinities, huge and
 * negative numbers, integers, strings with any bytes, and tables of those,
 * in every position. A binding may raise (misuse) or return nil, code,
 * message; it must never crash, read freed memory (a number turned into a
 * temporary string) or cast a float out of range (UBSan).
 *
 * Input layout: the first byte picks the call; then up to 7 arguments, each
 * a type byte followed by its payload (see push_value).
 *
 * Nothing leaves the machine: requests go to 127.0.0.1 port 1 (refused at
 * once), and waits and sleeps that could block are not given long times.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_imm_core(lua_State *L);

static lua_State *L;

typedef struct cursor {
    const uint8_t *p, *end;
} cursor;

static unsigned byte(cursor *c) {
    return c->p < c->end ? *c->p++ : 0;
}

static void push_value(lua_State *S, cursor *c, int depth) {
    static const double specials[] = {0.0, -0.0, -1, 0.0004, 1e-9, 1e300, -1e300, 9.2233720368547758e18,
                                      86400000.0, 4294967296.0, 65.5, 1.0};
    unsigned t = byte(c) % 9;
    switch (t) {
    case 0:
        lua_pushnil(S);
        break;
    case 1:
        lua_pushboolean(S, byte(c) & 1);
        break;
    case 2: {
        double d = 0;
        size_t n = (size_t)(c->end - c->p) < sizeof d ? (size_t)(c->end - c->p) : sizeof d;
        memcpy(&d, c->p, n); /* NaN and infinities included */
        c->p += n;
        lua_pushnumber(S, (lua_Number)d);
        break;
    }
    case 3:
        lua_pushinteger(S, (lua_Integer)(int8_t)byte(c) * (lua_Integer)(byte(c) + 1));
        break;
    case 4: {
        unsigned k = byte(c) % 4;
        lua_pushnumber(S, k == 0 ? (lua_Number)NAN : k == 1 ? (lua_Number)INFINITY : k == 2 ? (lua_Number)-INFINITY
                                                                                     : (lua_Number)specials[byte(c) % 12]);
        break;
    }
    case 5:
    case 6: {
        size_t n = byte(c);
        if (n > (size_t)(c->end - c->p))
            n = (size_t)(c->end - c->p);
        lua_pushlstring(S, (const char *)c->p, n);
        c->p += n;
        break;
    }
    case 7: {
        unsigned n = byte(c) % 6, i;
        lua_createtable(S, 0, 0);
        for (i = 0; i < n && depth < 3; i++) {
            push_value(S, c, depth + 1);
            push_value(S, c, depth + 1);
            /* nil and NaN cannot be keys */
            if (lua_isnil(S, -2) || (lua_type(S, -2) == LUA_TNUMBER && lua_tonumber(S, -2) != lua_tonumber(S, -2)))
                lua_pop(S, 2);
            else
                lua_rawset(S, -3);
        }
        break;
    }
    default: {
        /* an array of values, as header lists are */
        unsigned n = byte(c) % 5, i;
        lua_createtable(S, (int)n, 0);
        for (i = 0; i < n && depth < 3; i++) {
            push_value(S, c, depth + 1);
            lua_rawseti(S, -2, (lua_Integer)i + 1);
        }
        break;
    }
    }
}

/* The Lua side: calls one binding with the arguments, under pcall, keeping
 * the calls that could block short. */
static const char *driver =
    "local core = ...\n"
    "local calls = {\n"
    "  'sign_v3', 'sign_v2', 'percent_encode', 'redact', 'hash_hex', 'hmac_hex', 'gunzip',\n"
    "  'json_decode', 'http', 'multi', 'sleep', 'request', 'add', 'wait', 'misc', 'rsa_verify',\n"
    "  'json_encode', 'number_text',\n"
    "}\n"
    "local URL = 'http://127.0.0.1:1/'\n"
    /* a numeric string converts too (luaL_checknumber): cap it as well */
    "local function short(v) local x = tonumber(v) if x and x > 0.001 then return 0 end return v end\n"
    "return function(which, a, n)\n"
    "  local name = calls[which % #calls + 1]\n"
    "  if name == 'sleep' then return pcall(core.sleep, short(a[1])) end\n"
    "  if name == 'http' then\n"
    "    local ok, h = pcall(core.http, a[1])\n"
    "    if ok and h then h:close(); h:close() end\n"
    "    return\n"
    "  end\n"
    "  if name == 'request' or name == 'add' then\n"
    "    local ok, h = pcall(core.http, { timeout = 1, connect_timeout = 1 })\n"
    "    if not ok or not h then return end\n"
    "    if name == 'request' then\n"
    "      pcall(h.request, h, a[1], URL, a[2], a[3], a[4], a[5])\n"
    "    else\n"
    "      local m = core.multi()\n"
    "      local ok2, id = pcall(m.add, m, h, a[1], URL, a[2], a[3], a[4], a[5])\n"
    "      if ok2 and id then\n"
    "        pcall(m.perform, m)\n"
    "        pcall(m.sockets, m)\n"
    "        m:remove(h)\n"
    "        pcall(h.result, h)\n"
    "      end\n"
    "      m:close()\n"
    "    end\n"
    "    h:close()\n"
    "    return\n"
    "  end\n"
    "  if name == 'multi' or name == 'wait' then\n"
    "    local m = core.multi()\n"
    "    pcall(m.wait, m, short(a[1]))\n"
    "    pcall(m.timeout, m)\n"
    "    pcall(m.count, m)\n"
    "    pcall(m.remove, m, a[2])\n"
    "    m:close()\n"
    "    pcall(m.wait, m, short(a[1]))\n"
    "    return\n"
    "  end\n"
    "  if name == 'misc' then\n"
    "    pcall(core.nonce, a[1]); pcall(core.random, a[1]); pcall(core.monotonic, a[1]); pcall(core.backend, a[1])\n"
    "    return\n"
    "  end\n"
    "  return pcall(core[name], table.unpack(a, 1, n))\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cursor c = {data, data + size};
    unsigned which, n, i;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "imm.core", luaopen_imm_core, 0);
        if (luaL_loadstring(L, driver) != LUA_OK) {
            fprintf(stderr, "fuzz_core: %s\n", lua_tostring(L, -1));
            abort();
        }
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            fprintf(stderr, "fuzz_core: %s\n", lua_tostring(L, -1));
            abort();
        }
        lua_setglobal(L, "call");
    }
    lua_settop(L, 0);
    which = byte(&c);
    n = byte(&c) % 8;
    lua_getglobal(L, "call");
    lua_pushinteger(L, which);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        push_value(L, &c, 0);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushinteger(L, n);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        /* the driver itself never raises: every binding runs under pcall */
        fprintf(stderr, "fuzz_core: driver error: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
