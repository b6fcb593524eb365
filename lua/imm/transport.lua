--- Chooses how requests travel.
--
-- `transport` client option: "curl" (libcurl, blocking), or a table that
-- implements the transport interface documented in `imm.transport.curl`
-- (for example a cosocket transport inside nginx).
-- @module imm.transport

local type, format, tostring = type, string.format, tostring
local errors = require "imm.errors"

local _M = {}

local builtin = {
  curl = "imm.transport.curl",
}

--- Opens the transport named by `choice` (default "curl") with `opts`.
-- @return transport, or nil, err
function _M.open(choice, opts)
  choice = choice or "curl"
  if type(choice) == "table" then
    if type(choice.request) ~= "function" then
      return nil, errors.invalid("transport table must have a request method")
    end
    return choice
  end
  local mod = builtin[choice]
  if not mod then
    return nil, errors.invalid(format("unknown transport %q (expected \"curl\" or a transport table)",
      tostring(choice)))
  end
  return require(mod).new(opts)
end

return _M
