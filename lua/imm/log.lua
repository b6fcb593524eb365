--- Where imm's few messages go: stderr, or nginx's error log inside nginx.
-- @module imm.log

local type, tostring = type, tostring

local _M = {}

local function emit(line)
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.log) == "function" and ngx.WARN then
    ngx.log(ngx.WARN, line)
  else
    io.stderr:write(line, "\n")
  end
end

--- One warning line, prefixed with "imm: ".
function _M.warn(msg)
  emit("imm: " .. tostring(msg))
end

--- The sink for the `debug` option: true prints like `warn`, a function
-- receives each line, anything else disables debugging.
-- @return function(line) or nil
function _M.debug_sink(opt)
  if type(opt) == "function" then return opt end
  if opt == true then return function(line) emit("imm debug: " .. line) end end
  return nil
end

return _M
