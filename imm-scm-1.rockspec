-- imm: Alibaba Cloud IMM (2020-09-30) client for Lua, with a C core.
-- Install from a checkout:  luarocks make imm-scm-1.rockspec
rockspec_format = "3.0"
package = "imm"
version = "scm-1"
source = {
  -- built from a working tree with `luarocks make`; no remote source yet
  url = "file://./",
}
description = {
  summary = "Alibaba Cloud Intelligent Media Management (IMM) client: every action of API 2020-09-30, pagers, waiters, OpenResty",
  detailed = [[
A Lua client for Alibaba Cloud IMM, API version 2020-09-30. A C core signs
requests with OpenSSL (ACS3-HMAC-SHA256, ACS3-HMAC-SM3, V2) and sends them
with libcurl; a Lua layer returns plain tables and follows NextToken with a
coroutine pager.
]],
  -- a placeholder until the repository is published (as in the 0.1.0 rockspec)
  homepage = "https://github.com/imm-lua/imm",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
}
-- lua-cjson is the reference of the JSON specs and the optional "cjson"
-- decoder; imm itself encodes and decodes JSON in its C core
test_dependencies = {
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  -- checked by library: Debian keeps curl.h under a multiarch include dir
  OPENSSL = { library = "crypto" },
  CURL = { library = "curl" },
  ZLIB = { library = "z" },
}
build = {
  -- The Makefile, not LuaRocks' builtin backend: builtin links the module as
  -- ./imm/core.so in the checkout, where an interpreter started there finds
  -- it before the installed one, even when it was built for another Lua
  -- (issue 17). The Makefile keeps every product under build/<lua>/.
  type = "make",
  build_target = "rock",
  build_variables = {
    CFLAGS = "$(CFLAGS)", LIBFLAG = "$(LIBFLAG)", LUA_INCDIR = "$(LUA_INCDIR)", LUA = "$(LUA)",
    DEP_INCDIRS = "$(OPENSSL_INCDIR) $(CURL_INCDIR) $(ZLIB_INCDIR)",
    DEP_LIBDIRS = "$(OPENSSL_LIBDIR) $(CURL_LIBDIR) $(ZLIB_LIBDIR)",
  },
  install_target = "install-rock",
  install_variables = {
    LUA = "$(LUA)", INST_LIBDIR = "$(LIBDIR)", INST_LUADIR = "$(LUADIR)",
  },
  install = {
    -- imm-server runs the local IMM server (installed with the Lua modules)
    bin = { imm = "bin/imm", ["imm-server"] = "bin/imm-server" },
  },
}
