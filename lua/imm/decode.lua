--- The decoder seam: response bytes to Lua tables.
--
-- Two decoders return the same tables. `"imm"`, the default, is the
-- single-pass C decoder in `imm.core` (src/imm_json.c), which builds the
-- tables straight from the bytes. `"cjson"` is lua-cjson, through a private
-- `cjson.safe` instance so our settings never change the application's own
-- cjson; it is the reference, and optional: it is loaded on first use, so
-- imm needs no lua-cjson at run time. JSON `null` becomes an absent key in
-- objects, so `binding.Reason == nil` works as a Lua programmer expects; a
-- null array element stays `decode.null` (equal to `cjson.null`). Another
-- decoder can be given through the client's `decoder` option, as long as it
-- returns the same tables.
-- @module imm.decode

local type, next, find, pcall, require = type, next, string.find, pcall, require
local core = require "imm.core"

local _M = {}

-- JSON null: the C core's, the NULL light userdata, which equals
-- lua-cjson's cjson.null (so `v == cjson.null` keeps working).
local null = core.null
local cjson  -- lua-cjson's private instance, made on first use

-- Removes object keys whose value is null, recursively. Array slots keep
-- cjson.null, since removing them would leave holes that `#` cannot see.
local function strip_nulls(t)
  local k, v = next(t)
  while k ~= nil do
    local nk, nv = next(t, k)
    if v == null then
      if type(k) == "string" then t[k] = nil end
    elseif type(v) == "table" then
      strip_nulls(v)
    end
    k, v = nk, nv
  end
  return t
end

--- Decodes a JSON document.
-- @tparam string body
-- @return the decoded value (a table for objects and arrays)
-- @return nil, message when `body` is not valid JSON
function _M.cjson(body)
  if not cjson then
    local ok, cjson_safe = pcall(require, "cjson.safe")
    if not ok then return nil, "the cjson decoder needs lua-cjson, which is not installed" end
    cjson = cjson_safe.new()
    cjson.decode_invalid_numbers(false)  -- NaN and Infinity are not JSON
  end
  local v, err = cjson.decode(body)
  if v == nil and err then return nil, err end
  -- The walk costs as much as a fifth of a call; a body without the token
  -- `null` cannot hold one, and a plain search is far cheaper.
  if type(v) == "table" and find(body, "null", 1, true) then strip_nulls(v) end
  return v
end

local json_decode = core.json_decode

--- Decodes a JSON document with the C decoder of `imm.core`.
-- Returns the same tables as `cjson`, null handling included.
-- @tparam string body
-- @return the decoded value (a table for objects and arrays)
-- @return nil, message (with the byte position) when `body` is not valid JSON
-- @usage local t, err = require("imm.decode").imm('{"a":[1,null]}')
function _M.imm(body)
  return json_decode(body, null)
end

--- The decoder used when the client names none: the C decoder, which
-- takes about half of cjson's time on a ListBindings page (bench/decode_bench.lua).
_M.default = _M.imm

--- Looks a decoder up by name, or accepts a function.
function _M.get(d)
  if d == nil then return _M.default end
  if type(d) == "function" then return d end
  if d == "cjson" then return _M.cjson end
  if d == "imm" then return _M.imm end
  return nil
end

_M.null = null

return _M
