--- The IMM actions imm knows, and the validation of their parameters.
--
-- Bad input is caught here, before anything is signed or sent: a wrong
-- type, a value out of range, a missing required parameter or an unknown
-- name (with a "did you mean" hint). Actions not listed here can still be
-- called with `client:call`; their parameters are only checked for type,
-- and tables are encoded the way IMM expects (see `validate`).
--
-- Each schema also says whether its action is idempotent: a read
-- (`idempotent = true`) is retried after any retryable failure, a mutation
-- only when the service cannot have acted on it (see `is_idempotent`).
-- @module imm.operations

local type, pairs, next, tostring, format = type, pairs, next, tostring, string.format
local floor, huge, lower, sub, byte, find, gsub = math.floor, math.huge, string.lower, string.sub, string.byte,
  string.find, string.gsub
local errors = require "imm.errors"

-- A private cjson instance, so our settings never touch the application's.
local cjson = require("cjson.safe").new()

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

---@class imm.BindingParams
---@field ProjectName string required
---@field DatasetName string required
---@field URI string required; oss://bucket or oss://bucket/prefix/

---@class imm.StopBindingParams : imm.BindingParams
---@field Reason string|nil

---@class imm.CreateBindingResponse
---@field RequestId string
---@field Binding imm.Binding

---@class imm.ListProjectsParams
---@field MaxResults integer|nil 0..200; 0 or nil means 100
---@field NextToken string|nil
---@field Prefix string|nil

---@class imm.Project
---@field ProjectName string
---@field Description string|nil
---@field CreateTime string
---@field UpdateTime string
---@field DatasetCount integer|nil
---@field Tags { TagKey: string, TagValue: string }[]|nil
---@field [string] any

---@class imm.ListDatasetsParams
---@field ProjectName string required
---@field MaxResults integer|nil 0..200; 0 or nil means 100
---@field NextToken string|nil
---@field Prefix string|nil

---@class imm.Dataset
---@field ProjectName string
---@field DatasetName string
---@field Description string|nil
---@field [string] any

---@class imm.CallOptions
---@field method "POST"|"GET"|nil the HTTP method, signed as such; default "POST"
---@field idempotent boolean|nil overrides the action's own flag (see `operations.is_idempotent`)

---@class imm.PagerOptions
---@field max_items integer|nil stop after this many items
---@field page_size integer|nil sets MaxResults
---@field start_token string|nil resume from a saved NextToken
---@field items string|nil the response field holding the list (actions without a schema)
---@field concurrency integer|nil 1-100; > 1 without DatasetName: a parallel listing (bindings only)
---@field prefetch boolean|nil fetch the next page while the caller works on this one

-- oss://<bucket>[/<prefix>/]: a bucket name has 3 to 63 lowercase letters,
-- digits and hyphens and starts and ends with a letter or a digit; a prefix
-- ends with "/". Returns nil, or what is wrong.
local function oss_uri_problem(v)
  local bucket, rest = v:match("^oss://([^/]*)(.*)$")
  if not bucket then return "must start with oss://" end
  if #bucket < 3 or #bucket > 63 or not bucket:match("^[a-z0-9][a-z0-9%-]*[a-z0-9]$") then
    return "must name an OSS bucket (3-63 lowercase letters, digits and hyphens)"
  end
  if rest ~= "" and sub(rest, -1) ~= "/" then
    return "must end with / when it names a prefix (oss://bucket/prefix/)"
  end
  return nil
end

local function oss_scheme_problem(v)
  if not find(v, "^oss://.") then return "must be an oss:// URI" end
  return nil
end

-- The parameters that name one binding.
local function binding_key(uri_check, extra)
  local p = {
    ProjectName = { type = "string", required = true },
    DatasetName = { type = "string", required = true },
    URI = { type = "string", required = true, check = uri_check },
  }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

--- Parameter schemas. `type` is "string" or "integer"; `check(v)` returns
-- what is wrong with a string, or nil. `idempotent` says whether repeating a
-- call is harmless (see `is_idempotent`). `items` and `page_size` are for the
-- pagers: where the list is in a response, and the page-size parameter.
_M.actions = {
  ListBindings = {
    params = {
      ProjectName = { type = "string", required = true },
      DatasetName = { type = "string" },
      MaxResults = { type = "integer", min = 0, max = 200 },
      NextToken = { type = "string" },
      Name = { type = "string" },
    },
    items = "Bindings",
    page_size = "MaxResults",
    idempotent = true,
  },
  -- The binding lifecycle. Only CreateBinding checks the whole URI form:
  -- the others name a binding that exists, and the service says if not.
  CreateBinding = { params = binding_key(oss_uri_problem), idempotent = false },
  GetBinding = { params = binding_key(oss_scheme_problem), idempotent = true },
  StopBinding = {
    params = binding_key(oss_scheme_problem, { Reason = { type = "string" } }),
    idempotent = false,
  },
  ResumeBinding = { params = binding_key(oss_scheme_problem), idempotent = false },
  DeleteBinding = { params = binding_key(oss_scheme_problem), idempotent = false },
  ListProjects = {
    params = {
      MaxResults = { type = "integer", min = 0, max = 200 },
      NextToken = { type = "string" },
      Prefix = { type = "string" },
    },
    items = "Projects",
    page_size = "MaxResults",
    idempotent = true,
  },
  ListDatasets = {
    params = {
      ProjectName = { type = "string", required = true },
      MaxResults = { type = "integer", min = 0, max = 200 },
      NextToken = { type = "string" },
      Prefix = { type = "string" },
    },
    items = "Datasets",
    page_size = "MaxResults",
    idempotent = true,
  },
}

--- Is repeating `action` harmless? Its schema says; for an action without
-- one, IMM's naming decides: `List*` and `Get*` actions only read, anything
-- else is taken to change something. `override` (a boolean, from the
-- `idempotent` call option) wins over both.
-- @tparam string action
-- @tparam[opt] boolean override
-- @treturn boolean
function _M.is_idempotent(action, override)
  if override ~= nil then return override end
  local def = _M.actions[action]
  if def then return def.idempotent == true end
  return find(action, "^List%u") ~= nil or find(action, "^Get%u") ~= nil
end

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

--- The first key of `opts` that `known` (a set) lacks, as an
-- InvalidParameter error naming `what` ("client option", ...) with a
-- did-you-mean hint; nil when every key is known.
-- @usage local err = operations.unknown_key(opts, { method = true }, "call option")
function _M.unknown_key(opts, known, what)
  for k in pairs(opts) do
    if known[k] == nil then
      local hint = type(k) == "string" and _M.suggest(k, known)
      return errors.invalid(format("unknown %s %q%s", what, tostring(k),
        hint and format(" (did you mean %q?)", hint) or ""))
    end
  end
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
    local problem = spec.check and spec.check(v)
    if problem then
      return nil, errors.invalid(format("%s: %s %s, got %s", action, name, problem, describe(v)))
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

-- Values for an action without a schema: scalars, written as strings.
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
  return nil, errors.invalid(format("%s: %s must be a string, number, boolean or table, got %s",
    action, name, t))
end

local SCALAR = { string = true, number = true, boolean = true }

-- 1..n with n >= 1, nothing else, every element a scalar?
local function scalar_array(t)
  local n = 0
  for k, v in pairs(t) do
    if type(k) ~= "number" or not SCALAR[type(v)] then return nil end
    n = n + 1
  end
  if n == 0 then return nil end
  for i = 1, n do
    if t[i] == nil then return nil end
  end
  return n
end

-- A table value of an action without a schema, added to `out`: an array of
-- scalars as Name.1, Name.2, ...; anything else as one JSON string.
local function generic_table(action, name, v, out)
  if next(v) == nil then
    return nil, errors.invalid(format("%s: %s is an empty table, which could mean [] or {}: "
      .. "leave it out, or pass the JSON text as a string", action, name))
  end
  local n = scalar_array(v)
  if n then
    for i = 1, n do
      local key = name .. "." .. i
      if out[key] ~= nil then
        return nil, errors.invalid(format("%s: %s is given twice (as %s and in %s)", action, key, key, name))
      end
      local s, err = generic_value(action, key, v[i])
      if not s then return nil, err end
      out[key] = s
    end
    return true
  end
  local s, err = cjson.encode(v)
  if not s then
    return nil, errors.invalid(format("%s: %s cannot be encoded as JSON: %s", action, name, tostring(err)))
  end
  -- cjson writes "/" as "\/"; both are valid JSON, and URIs read better without.
  -- cjson escapes CR and LF inside strings, so the text holds neither raw.
  out[name] = (gsub(s, "\\/", "/"))
  return true
end

--- Checks `params` for `action` and returns them as a new table of strings,
-- ready to sign.
--
-- For an action with a schema, each value must have the type the schema
-- gives. For an action without one, a string, number or boolean is sent as
-- text; an array of scalars `{ "a", "b" }` as `Name.1=a&Name.2=b`; any other
-- table (an object, or an array of objects) as one JSON string, which is how
-- IMM takes structured parameters such as `Targets`, `Notification` or `Tag`.
-- Raw CR and LF are refused in every text value; in a JSON value they are
-- escaped (`\n`), so the encoded text holds none.
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
    elseif type(v) == "table" then
      s, err = generic_table(action, name, v, out)
    else
      s, err = generic_value(action, name, v)
      if s and out[name] ~= nil then
        return nil, errors.invalid(format("%s: %s is given twice", action, name))
      end
    end
    if not s then return nil, err end
    if s ~= true then out[name] = s end
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
