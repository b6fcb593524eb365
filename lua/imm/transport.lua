--- Chooses how requests travel.
--
-- The `transport` client option:
-- - nil (automatic): ngx_lua cosockets inside nginx, libcurl everywhere else.
--   Inside nginx imm never falls back to libcurl, which would block the
--   worker: a call from a phase without cosockets fails with
--   `UnsupportedPhase`, naming the phase.
-- - "curl" or "ngx": that transport, wherever the code runs.
-- - a table implementing the transport interface (see `imm.transport.curl`),
--   or a function `request(req) -> res | nil, err` with the same contract.
-- @module imm.transport

local type, format, tostring, setmetatable = type, string.format, tostring, setmetatable
local core = require "imm.core"
local errors = require "imm.errors"

local _M = {}

local builtin = {
  curl = "imm.transport.curl",
  ngx = "imm.transport.ngx",
}

--- Are we running inside nginx with ngx_lua?
function _M.in_nginx()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
end

--- Waits between retries without blocking nginx where that is possible.
function _M.sleep(seconds)
  if _M.in_nginx() and require("imm.transport.ngx").phase_ok() then
    return rawget(_G, "ngx").sleep(seconds)
  end
  core.sleep(seconds)
end

-- Wraps a plain function as a transport.
local Func = {}
Func.__index = Func
--- Sends a request through the wrapped function.
function Func:request(req) return self.fn(req) end
--- Waits between retries (ngx.sleep inside nginx).
function Func.sleep(_, seconds) _M.sleep(seconds) end
--- Nothing to release.
function Func.close() end

--- The name of the transport `choice` resolves to here and now.
function _M.resolve(choice)
  if choice == nil then return _M.in_nginx() and "ngx" or "curl" end
  return choice
end

--- Opens the transport named by `choice` with `opts`.
-- @return transport, or nil, err
function _M.open(choice, opts)
  local t = type(choice)
  if t == "function" then
    return setmetatable({ fn = choice, name = "function" }, Func)
  end
  if t == "table" then
    if type(choice.request) ~= "function" then
      return nil, errors.invalid("transport table must have a request method")
    end
    if type(choice.sleep) ~= "function" then
      choice.sleep = function(_, s) _M.sleep(s) end
    end
    return choice
  end
  local name = _M.resolve(choice)
  local mod = builtin[name]
  if not mod then
    return nil, errors.invalid(format("unknown transport %q (expected \"curl\", \"ngx\", a table or a function)",
      tostring(choice)))
  end
  return require(mod).new(opts)
end

return _M
