--- The decoder seam: response bytes to Lua tables.
--
-- Two decoders return the same tables, but for numbers. `"imm"`, the
-- default, is the single-pass C decoder in `imm.core` (src/imm_json.c),
-- which builds the tables straight from the bytes and reads integers
-- exactly (Lua integers on 5.3/5.4; with the client's `big_integers =
-- "string"`, the ones the runtime cannot hold as their text: docs/api.md,
-- "Numbers"). `"cjson"` is lua-cjson, through a private
-- `cjson.safe` instance so our settings never change the application's own
-- cjson; it is the reference, and optional: it is loaded on first use, so
-- imm needs no lua-cjson at run time. JSON `null` becomes an absent key in
-- objects, so `binding.Reason == nil` works as a Lua programmer expects; a
-- null array element stays `decode.null` (equal to `cjson.null`). Another
-- decoder can be given through the client's `decoder` option, as long as it
-- returns the same tables.
-- @module imm.decode

local type, next, find, pcall, require, pairs = type, next, string.find, pcall, require, pairs
local getmetatable, setmetatable = getmetatable, setmetatable
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
  -- cjson reads a C string and would ignore whatever follows a NUL byte
  -- ('{...}\0,"NextToken":...'); no valid JSON holds one
  local nul = find(body, "\0", 1, true)
  if nul then return nil, "unexpected NUL byte at character " .. nul end
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

--- The metatable `keep_arrays` gives each empty JSON array. Decoded, `[]`
-- and `{}` are both an empty table; this tells them apart again.
_M.empty_array = setmetatable({}, { __tostring = function() return "imm.decode.empty_array" end })
local empty_array = _M.empty_array

--- Decodes like `imm`, and marks each empty array with the metatable
-- `decode.empty_array`, so that the value can be written back as it came
-- (`shape`, for `imm.core.json_encode`). The `imm` command's JSON output
-- decodes with it.
-- @tparam string body
-- @return the decoded value, or nil, message
-- @usage local client = imm.new{ region = "cn-hangzhou", decoder = decode.keep_arrays }
function _M.keep_arrays(body)
  return json_decode(body, null, empty_array)
end

-- Two shapes as one, for the elements of one array: nil and "any" say
-- nothing; objects merge their fields, arrays their elements. An object
-- against an array (no API reply has such a list) keeps the first.
local function merge(a, b)
  if a == nil or a == "any" then return b end
  if b == nil or b == "any" then return a end
  if a.fields and b.fields then
    local fields = {}
    for k, f in pairs(a.fields) do fields[k] = f end
    for k, f in pairs(b.fields) do fields[k] = merge(fields[k], f) end
    return { fields = fields }
  end
  if a.array and b.array then return { array = merge(a.array, b.array) or "any" } end
  return a
end

-- The shape of one value; nil where inference already gets it right.
local function shape_of(v)
  if type(v) ~= "table" then return nil end
  if getmetatable(v) == empty_array then return { array = "any" } end
  if v[1] ~= nil then
    local elements
    for i = 1, #v do elements = merge(elements, shape_of(v[i])) end
    return elements and { array = elements } or nil
  end
  local fields
  for k, x in pairs(v) do
    local s = shape_of(x)
    if s then
      fields = fields or {}
      fields[k] = s
    end
  end
  return fields and { fields = fields } or nil
end

--- The shape (see `imm.core.json_encode`) that writes a value decoded by
-- `keep_arrays` back with its empty arrays as `[]`; nil when inference
-- alone gets every table right.
-- @param v a decoded value
-- @treturn table|nil shape
-- @usage local text = core.json_encode(res, decode.shape(res))
function _M.shape(v)
  return shape_of(v)
end

--- The decoder used when the client names none: the C decoder, which
-- takes about half of cjson's time on a ListBindings page (bench/decode_bench.lua).
_M.default = _M.imm

-- The twins of the C decoders for big_integers = "string": an integer the
-- runtime cannot hold exactly (beyond 2^53 in magnitude on Lua 5.1 and
-- LuaJIT, beyond int64 on 5.3/5.4) comes back as its decimal text.
local as_text = {
  [_M.imm] = function(body) return json_decode(body, null, nil, "string") end,
  [_M.keep_arrays] = function(body) return json_decode(body, null, empty_array, "string") end,
}

-- The C decoders' arguments after the text, by decoder: a transport that
-- keeps the body in C (`decode_body` of the curl transport's replies)
-- decodes it there with them, and no Lua string of the body is made.
_M.in_place = {
  [_M.imm] = { null = null },
  [_M.keep_arrays] = { null = null, arrays = empty_array },
  [as_text[_M.imm]] = { null = null, big = "string" },
  [as_text[_M.keep_arrays]] = { null = null, arrays = empty_array, big = "string" },
}

--- Looks a decoder up by name, or accepts a function.
-- @param d nil, "imm", "cjson" or a function
-- @tparam[opt] string big_integers nil or "float" (the nearest float), or
-- "string": then only the C decoders (`imm`, `keep_arrays`) have a twin
-- @return the decoder, or nil (and a reason when the pair has no decoder)
-- @usage local f = decode.get("imm", "string")
function _M.get(d, big_integers)
  local f
  if d == nil then f = _M.default
  elseif type(d) == "function" then f = d
  elseif d == "cjson" then f = _M.cjson
  elseif d == "imm" then f = _M.imm
  else return nil end
  if big_integers == "string" then
    if not as_text[f] then
      return nil, "big_integers = \"string\" needs the imm decoder (or decode.keep_arrays): "
        .. (f == _M.cjson and "lua-cjson" or "a decoder function") .. " cannot give big integers as text"
    end
    return as_text[f]
  end
  return f
end

_M.null = null

return _M
