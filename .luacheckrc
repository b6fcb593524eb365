-- luacheck configuration: one source for Lua 5.1-5.4 and LuaJIT.
std = "max"
max_line_length = 120
files["spec/"] = { std = "+busted" }
