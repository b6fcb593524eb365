-- luacheck configuration: one source for Lua 5.1-5.4 and LuaJIT.
std = "max"
max_line_length = 120
files["spec/"] = { std = "+busted" }
-- code that runs inside nginx sees ngx_lua's globals
files["lua/imm/transport/ngx.lua"] = { std = "max+ngx_lua" }
files["spec/openresty/"] = { std = "max+ngx_lua" }
files["examples/openresty/"] = { std = "max+ngx_lua" }
-- LÖVE's callbacks are fields of its global `love` table, set by the game
files["examples/love/"] = { std = "luajit", globals = { "love" } }
