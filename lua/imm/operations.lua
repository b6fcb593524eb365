--- The IMM actions imm knows, and the validation of their parameters.
--
-- Bad input is caught here, before anything is signed or sent: a wrong
-- type, a value out of range, a missing required parameter or an unknown
-- name (with a "did you mean" hint). Actions not listed here can still be
-- called with `client:call`; their parameters are only checked for type.
-- @module imm.operations

local type, pairs, tostring, format = type, pairs, tostring, string.format
local floor, huge, lower, sub, byte, find = math.floor, math.huge, string.lower, string.sub, string.byte,
  string.find
local errors = require "imm.errors"

local _M = {}

_M.API_VERSION = "2020-09-30"

---@class imm.ListBindingsParams
---@field ProjectName string required
---@field DatasetName string|nil
---@field MaxResults integer|nil 0..200; 0 or nil means 100
---@field NextToken string|nil
---@field Name string|nil

---@class imm.Binding
---@field ProjectName string
---@field DatasetName string
---@field URI string oss://bucket[/prefix/]
---@field State string Ready, Stopped, Running, Retrying, Failed or Deleted
---@field Phase string|nil FullScanning or IncrementalScanning
---@field CreateTime string RFC3339Nano
---@field UpdateTime string RFC3339Nano
---@field Reason string|nil
---@field [string] any fields the service adds are kept

---@class imm.ListBindingsResponse
---@field RequestId string
---@field NextToken string|nil nil on the last page
---@field Bindings imm.Binding[]

---@class imm.PagerOptions
---@field max_items integer|nil stop after this many items
---@field page_size integer|nil sets MaxResults
---@field start_token string|nil resume from a saved NextToken
---@field items string|nil the response field holding the list (actions without a schema)

--- Parameter schemas. `type` is "string" or "integer".
_M.actions = {
  ListBindings = {
    params = {
      ProjectName = { type = "string", required = true },
      DatasetName = { type = "string" },
      MaxResults = { type = "integer", min = 0, max = 200 },
      NextToken = { type = "string" },
      Name = { type = "string" },
    },
    -- for the pagers: where the items are, and the page-size parameter
    items = "Bindings",
    page_size = "MaxResults",
  },
}

-- Levenshtein distance, to suggest the parameter a typo meant.
local function distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev, cur = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur[0] = i
    local ca = byte(a, i)
    for j = 1, lb do
      local cost = (ca == byte(b, j)) and 0 or 1
      local v = prev[j] + 1
      if cur[j - 1] + 1 < v then v = cur[j - 1] + 1 end
      if prev[j - 1] + cost < v then v = prev[j - 1] + cost end
      cur[j] = v
    end
    prev, cur = cur, prev
  end
  return prev[lb]
end

--- The closest name among `candidates` (a set), or nil when none is close.
function _M.suggest(name, candidates)
  local lname, best, best_d = lower(name), nil, huge
  for cand in pairs(candidates) do
    local d = (lower(cand) == lname) and 0 or distance(lname, lower(cand))
    if d < best_d or (d == best_d and best and cand < best) then best, best_d = cand, d end
  end
  if best and best_d <= 2 + floor(#name / 8) then return best end
  return nil
end

local function is_integer(v)
  return type(v) == "number" and v == floor(v) and v > -huge and v < huge
end

local function describe(v)
  if type(v) == "string" then
    if #v > 40 then v = sub(v, 1, 40) .. "..." end
    return format("%q", v)
  end
  return type(v) == "number" and tostring(v) or type(v)
end

-- CR and LF are refused in every value: nothing legitimate needs them, and
-- refusing them early rules out header injection wherever a value travels.
local function crlf_error(action, name)
  return nil, errors.invalid(format("%s: %s must not contain CR or LF", action, name))
end

local function check_value(action, name, spec, v)
  if spec.type == "string" then
    if type(v) ~= "string" then
      return nil, errors.invalid(format("%s: %s must be a string, got %s", action, name, type(v)))
    end
    if find(v, "[\r\n]") then return crlf_error(action, name) end
    if spec.required and v == "" then
      return nil, errors.invalid(format("%s: %s must not be empty", action, name), "MissingParameter")
    end
    return v
  end
  -- integer
  if not is_integer(v) then
    return nil, errors.invalid(format("%s: %s must be an integer from %d to %d, got %s",
      action, name, spec.min, spec.max, describe(v)))
  end
  if v < spec.min or v > spec.max then
    return nil, errors.invalid(format("%s: %s must be from %d to %d, got %s",
      action, name, spec.min, spec.max, describe(v)))
  end
  return format("%d", v)
end

-- Values for an action without a schema: scalars only, written as strings.
local function generic_value(action, name, v)
  local t = type(v)
  if t == "string" then
    if find(v, "[\r\n]") then return crlf_error(action, name) end
    return v
  end
  if t == "number" then
    if is_integer(v) then return format("%d", v) end
    if v ~= v or v == huge or v == -huge then
      return nil, errors.invalid(format("%s: %s is not a finite number", action, name))
    end
    return format("%.17g", v)
  end
  if t == "boolean" then return v and "true" or "false" end
  return nil, errors.invalid(format("%s: %s must be a string, number or boolean, got %s",
    action, name, t))
end

--- Checks `params` for `action` and returns them as a new table of strings,
-- ready to sign.
-- @tparam string action e.g. "ListBindings"
-- @tparam table params
-- @treturn table query (name -> string)
-- @return nil, err on bad input
function _M.validate(action, params)
  if type(action) ~= "string" or not action:match("^[A-Za-z][A-Za-z0-9]*$") then
    return nil, errors.invalid("action must be an API action name such as \"ListBindings\", got "
      .. describe(action))
  end
  if params == nil then params = {} end
  if type(params) ~= "table" then
    return nil, errors.invalid(format("%s: parameters must be a table, got %s", action, type(params)))
  end
  local def = _M.actions[action]
  local out = {}
  for name, v in pairs(params) do
    if type(name) ~= "string" then
      return nil, errors.invalid(format("%s: parameter names must be strings, got %s",
        action, describe(name)))
    end
    local s, err
    if def then
      local spec = def.params[name]
      if not spec then
        local hint = _M.suggest(name, def.params)
        return nil, errors.invalid(format("%s: unknown parameter %s%s", action, describe(name),
          hint and format(" (did you mean %q?)", hint) or ""))
      end
      s, err = check_value(action, name, spec, v)
    else
      s, err = generic_value(action, name, v)
    end
    if not s then return nil, err end
    out[name] = s
  end
  if def then
    for name, spec in pairs(def.params) do
      if spec.required and out[name] == nil then
        return nil, errors.invalid(format("%s: %s is required", action, name), "MissingParameter")
      end
    end
  end
  return out
end

return _M
