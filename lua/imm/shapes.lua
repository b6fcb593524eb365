--- The checks of JSON parameters against their shapes (`imm.api`), and
-- the text of a bad value in a message: what `imm.operations` needs only
-- for a JSON parameter, a table sent to an action without a schema, or a
-- bad value. Loaded on that first use, so that a call with neither does
-- not compile it.
-- @module imm.shapes

local type, pairs, next, tostring, format = type, pairs, next, tostring, string.format
local getmetatable, rawget, require = getmetatable, rawget, require
local floor, huge, sub = math.floor, math.huge, string.sub
local errors = require "imm.errors"
local core = require "imm.core"
local hint_text = require("imm.hints").hint_text

local json_encode, json_decode = core.json_encode, core.json_decode

local _M = {}

--- A value in a message: a string quoted (cut at 40 bytes), a number, or its type.
function _M.describe(v)
  if type(v) == "string" then
    if #v > 40 then v = sub(v, 1, 40) .. "..." end
    return format("%q", v)
  end
  return type(v) == "number" and tostring(v) or type(v)
end

local describe = _M.describe

local function finite(v)
  return v == v and v > -huge and v < huge
end

local MAX_DEPTH = 64
local NULL = {}  -- JSON null in a decoded text, for the shape check only

-- The path of the first table in `v` (itself included) whose metatable has
-- __index or __pairs, or nil. The JSON encoder reads tables raw, as the
-- service will see them; such a table (a read-only wrapper, a proxy) could
-- show the checks other contents than the encoder sends, so it is refused.
-- Walked raw, so nothing the caller wrote runs here.
function _M.proxy_path(v, path, depth)
  if type(v) ~= "table" or depth > MAX_DEPTH then return nil end
  local mt = getmetatable(v)
  if type(mt) == "table" and (rawget(mt, "__index") ~= nil or rawget(mt, "__pairs") ~= nil) then
    return path
  end
  local k, x = next(v)
  while k ~= nil do
    if type(x) == "table" then
      local sub_path = type(k) == "number" and format("%s[%s]", path, describe(k)) or (path .. "." .. tostring(k))
      local p = _M.proxy_path(x, sub_path, depth + 1)
      if p then return p end
    end
    k, x = next(v, k)
  end
  return nil
end

--- The error for a table `proxy_path` found.
function _M.proxy_error(action, path)
  return nil, errors.invalid(format("%s: %s is a table with a metatable (__index or __pairs), which imm "
    .. "does not follow: it sends tables as they are, so pass a plain copy", action, path))
end

-- What is wrong with `v` as a value of `shape`, or nil. `path` names it in
-- the message (Targets[1].Video). `strict`: a model's unknown field is an
-- error (a table from the caller); otherwise it is kept (a JSON text, the
-- way to send a field newer than the schema).
local function shape_problem(v, shape, path, strict, depth)
  if depth > MAX_DEPTH then return path .. " is nested too deeply (or refers to itself)" end
  if shape == nil or shape == "any" or v == NULL then return nil end
  local tv = type(v)
  if shape == "string" or shape == "boolean" then
    if tv ~= shape then return format("%s must be a %s, got %s", path, shape, describe(v)) end
    return nil
  end
  if shape == "number" then
    if tv ~= "number" or not finite(v) then
      return format("%s must be a finite number, got %s", path, describe(v))
    end
    return nil
  end
  if tv ~= "table" then
    return format("%s must be %s, got %s", path, shape.array and "an array" or "an object", describe(v))
  end
  if shape.array then
    local n = 0
    for k in pairs(v) do
      if type(k) == "string" then return format("%s must be an array, got an object", path) end
      if type(k) ~= "number" or k < 1 or k ~= floor(k) then
        return format("%s must be an array (keys 1..n), got the key %s", path, describe(k))
      end
      n = n + 1
    end
    for i = 1, n do
      if v[i] == nil then return format("%s must be an array without holes (no [%d])", path, i) end
      local p = shape_problem(v[i], shape.array, format("%s[%d]", path, i), strict, depth + 1)
      if p then return p end
    end
    return nil
  end
  if v[1] ~= nil then return format("%s must be an object, got an array", path) end
  local fields = shape.fields
  for k, x in pairs(v) do
    if type(k) ~= "string" then
      return format("%s must be an object with string keys, got the key %s", path, describe(k))
    end
    local sub_shape
    if fields then
      sub_shape = fields[k]
      if sub_shape == nil and strict then
        -- name the first unknown key in byte order, so the message is stable
        for k2 in pairs(v) do
          if type(k2) == "string" and fields[k2] == nil and k2 < k then k = k2 end
        end
        return format("%s has no field %q%s", path, k, hint_text(k, fields))
      end
    else
      sub_shape = shape.map
    end
    local p = shape_problem(x, sub_shape, path .. "." .. k, strict, depth + 1)
    if p then return p end
  end
  return nil
end

-- A JSON parameter: a table is checked against the shape and encoded with
-- it, so an empty table is [] or {} as the schema says; a string is taken
-- as the JSON text and sent as it is, once it parses as JSON of that shape.
function _M.json_value(action, name, shape, v)
  local t = type(v)
  if t == "string" then
    local decoded, derr = json_decode(v, NULL)
    if decoded == nil then
      return nil, errors.invalid(format("%s: %s is a string but not JSON text (%s)", action, name,
        tostring(derr)))
    end
    local p = shape_problem(decoded, shape, name, false, 0)
    if p then return nil, errors.invalid(format("%s: %s (in the JSON text)", action, p)) end
    return v
  end
  if t ~= "table" then
    return nil, errors.invalid(format("%s: %s must be %s (a table, or its JSON text), got %s", action, name,
      require("imm.operations").describe_shape(shape), describe(v)))
  end
  local proxy = _M.proxy_path(v, name, 0)
  if proxy then return _M.proxy_error(action, proxy) end
  local p = shape_problem(v, shape, name, true, 0)
  if p then return nil, errors.invalid(format("%s: %s", action, p)) end
  local s, err = json_encode(v, shape)
  if not s then
    return nil, errors.invalid(format("%s: %s cannot be encoded as JSON: %s", action, name, tostring(err)))
  end
  return s
end

return _M
