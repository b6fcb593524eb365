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
  summary = "Alibaba Cloud Intelligent Media Management (IMM) client: ListBindings and any RPC action",
  detailed = [[
A Lua client for Alibaba Cloud IMM, API version 2020-09-30. A C core signs
requests with OpenSSL (ACS3-HMAC-SHA256, ACS3-HMAC-SM3, V2) and sends them
with libcurl; a Lua layer returns plain tables and follows NextToken with a
coroutine pager.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
}
external_dependencies = {
  -- checked by library: Debian keeps curl.h under a multiarch include dir
  OPENSSL = { library = "crypto" },
  CURL = { library = "curl" },
  ZLIB = { library = "z" },
}
build = {
  type = "builtin",
  modules = {
    ["imm"] = "lua/imm.lua",
    ["imm.client"] = "lua/imm/client.lua",
    ["imm.credentials"] = "lua/imm/credentials.lua",
    ["imm.credentials.base"] = "lua/imm/credentials/base.lua",
    ["imm.credentials.chain"] = "lua/imm/credentials/chain.lua",
    ["imm.credentials.cli_profile"] = "lua/imm/credentials/cli_profile.lua",
    ["imm.credentials.credentials_uri"] = "lua/imm/credentials/credentials_uri.lua",
    ["imm.credentials.ecs_ram_role"] = "lua/imm/credentials/ecs_ram_role.lua",
    ["imm.credentials.env"] = "lua/imm/credentials/env.lua",
    ["imm.credentials.oidc_role_arn"] = "lua/imm/credentials/oidc_role_arn.lua",
    ["imm.credentials.profile"] = "lua/imm/credentials/profile.lua",
    ["imm.credentials.ram_role_arn"] = "lua/imm/credentials/ram_role_arn.lua",
    ["imm.credentials.static"] = "lua/imm/credentials/static.lua",
    ["imm.credentials.sts"] = "lua/imm/credentials/sts.lua",
    ["imm.decode"] = "lua/imm/decode.lua",
    ["imm.endpoint"] = "lua/imm/endpoint.lua",
    ["imm.errors"] = "lua/imm/errors.lua",
    ["imm.log"] = "lua/imm/log.lua",
    ["imm.operations"] = "lua/imm/operations.lua",
    ["imm.pager"] = "lua/imm/pager.lua",
    ["imm.parallel"] = "lua/imm/parallel.lua",
    ["imm.response"] = "lua/imm/response.lua",
    ["imm.signer"] = "lua/imm/signer.lua",
    ["imm.transport"] = "lua/imm/transport.lua",
    ["imm.transport.curl"] = "lua/imm/transport/curl.lua",
    ["imm.transport.ngx"] = "lua/imm/transport/ngx.lua",
    ["imm.core"] = {
      sources = { "src/imm_buf.c", "src/imm_sign.c", "src/imm_http.c", "src/imm_json.c", "src/imm_core.c" },
      -- the same version as lua/imm/client.lua; spec/02 checks they agree
      defines = { "_POSIX_C_SOURCE=200809L", 'IMM_VERSION="0.1.0"' },
      libraries = { "curl", "ssl", "crypto", "z", "pthread" },
      incdirs = { "$(OPENSSL_INCDIR)", "$(CURL_INCDIR)", "$(ZLIB_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(CURL_LIBDIR)", "$(ZLIB_LIBDIR)" },
    },
  },
  install = {
    bin = { imm = "bin/imm" },
  },
}
