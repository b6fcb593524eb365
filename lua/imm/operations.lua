--- The IMM actions imm knows, and the validation and encoding of their
-- parameters.
--
-- The schemas come from `imm.api`, generated from the API description in
-- api/ (tools/gen_api.py): every action of the official SDK, with each
-- parameter's wire name, place (query or form body), encoding (scalar text
-- or one JSON text) and type. This module wraps them with the checks the
-- description cannot give (the OSS URI form of CreateBinding, MaxResults
-- ranges) and with StopBinding and ResumeBinding, which the service still
-- answers but the SDK has not listed since its 3.0.0.
--
-- Bad input is caught here, before anything is signed or sent: an unknown
-- name (with a "did you mean" hint, at any depth of a structured value), a
-- wrong type, a value out of range, a missing required parameter. Actions
-- not listed can still be called with `client:call` (the escape hatch); see
-- `validate`.
--
-- Each schema also says whether its action is idempotent: a read
-- (`idempotent = true`) is retried after any retryable failure, a mutation
-- only when the service cannot have acted on it (see `is_idempotent`).
-- @module imm.operations

local type, pairs, next, tostring, format = type, pairs, next, tostring, string.format
local floor, huge, find, match, gsub, sub = math.floor, math.huge, string.find, string.match, string.gsub, string.sub
local setmetatable, rawset, require = setmetatable, rawset, require
local errors = require "imm.errors"
local core = require "imm.core"
local generated = require "imm.actions"
-- the JSON parameters' shape checks and the did-you-mean hints: loaded by
-- the first JSON parameter or bad value, and the first hint, as most calls
-- need neither
local shapes = require("imm.lazy")("imm.shapes")
local hints = require("imm.lazy")("imm.hints")

local json_encode, number_text = core.json_encode, core.number_text

local _M = {}

_M.API_VERSION = generated._api_version

---@class imm.BindingParams
---@field ProjectName string required
---@field DatasetName string required
---@field URI string required; oss://bucket or oss://bucket/prefix/

---@class imm.StopBindingParams : imm.BindingParams
---@field Reason string|nil

---@class imm.ResumeBindingParams : imm.BindingParams

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

-- imm.<Action>Response, the type of each action's response, is generated
-- (lua/imm/actions.lua).

---@class imm.Project
---@field ProjectName string
---@field Description string|nil
---@field CreateTime string
---@field UpdateTime string
---@field DatasetCount integer|nil
---@field Tags { TagKey: string, TagValue: string }[]|nil
---@field [string] any

---@class imm.Dataset
---@field ProjectName string
---@field DatasetName string
---@field Description string|nil
---@field [string] any

---@class imm.CallOptions
---@field method "POST"|"GET"|nil the HTTP method, signed as such; default "POST"
---@field idempotent boolean|nil overrides the action's own flag (see `operations.is_idempotent`)
---@field wait boolean|table|nil Create*Task only: wait for the task (true or wait_task's options; docs/tasks.md)
---@field deadline number|nil seconds for this call with its retries (overrides the client's)
---@field timeout number|nil seconds for one attempt of this call (overrides the client's)
---@field max_retries integer|nil 0-20, for this call (overrides the client's)
---@field headers table<string,string>|nil extra request headers, e.g. traceparent (docs/api.md, "Call options")
---@field meta boolean|nil true: a successful call returns res, nil, meta (imm.CallMeta)

---@class imm.CallMeta
---@field action string
---@field request_id string|nil
---@field status integer the HTTP status
---@field attempts integer
---@field elapsed number seconds, the whole call
---@field headers table<string,string> the response headers (lowercase names)

---@class imm.PagerOptions
---@field max_items integer|nil stop after this many items
---@field page_size integer|nil sets MaxResults; default and at most the action's documented largest page (200 or 100)
---@field start_token string|nil resume from a saved NextToken
---@field items string|nil the response field holding the list (actions without a schema)
---@field concurrency integer|nil 1-100; > 1 without DatasetName: a parallel listing (bindings only)
---@field prefetch boolean|nil fetch the next page while the caller works on this one
---@field resume string|nil a failed parallel listing's err.resume: list what it had not handed over (bindings only)
---@field deadline number|nil a call option, for each page (so are timeout, max_retries, headers, idempotent)

-- oss://<bucket>[/<prefix>/]: a bucket name has 3 to 63 lowercase letters,
-- digits and hyphens and starts and ends with a letter or a digit; a prefix
-- ends with "/". Returns nil, or what is wrong.
local function oss_uri_problem(v)
  if find(v, "[\r\n]") then return "must not contain CR or LF" end
  local bucket, rest = match(v, "^oss://([^/]*)(.*)$")
  if not bucket then return "must start with oss://" end
  if #bucket < 3 or #bucket > 63 or not match(bucket, "^[a-z0-9][a-z0-9%-]*[a-z0-9]$") then
    return "must name an OSS bucket (3-63 lowercase letters, digits and hyphens)"
  end
  if rest ~= "" and sub(rest, -1) ~= "/" then
    return "must end with / when it names a prefix (oss://bucket/prefix/)"
  end
  return nil
end

local function oss_scheme_problem(v)
  if find(v, "[\r\n]") then return "must not contain CR or LF" end
  if not find(v, "^oss://.") then return "must be an oss:// URI" end
  return nil
end

--- Parameter schemas, by action: `imm.api.actions`, wrapped. A parameter
-- is `{ type = SHAPE, json = true|nil, body = true|nil, required = true|nil }`
-- (see `imm.api`); hand-written checks add `integer`, `min`, `max` (numbers)
-- and `check(v)` (strings: returns what is wrong, or nil). An action has
-- `idempotent` (see `is_idempotent`), `form` (it sends a form body), and,
-- when it pages, `items` (the list field) and `page_size` (the parameter).
--
-- Each action's table is built from `imm.schema` the first time it is
-- read (compiling them all was most of `require "imm"`), so `pairs` sees
-- only those built so far: `action_names` lists them all.
local actions = {}
_M.actions = actions

-- Absent from the official SDK since its 3.0.0; the service still answers them.
local function binding_key(extra)
  local p = {
    ProjectName = { type = "string", required = true },
    DatasetName = { type = "string", required = true },
    URI = { type = "string", required = true, check = oss_scheme_problem },
  }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end
actions.StopBinding = { params = binding_key { Reason = { type = "string" } }, idempotent = false,
  legacy = true, response = { "RequestId" } }
actions.ResumeBinding = { params = binding_key(), idempotent = false, legacy = true, response = { "RequestId" } }

-- The hand-written checks, added to each action's table as it is built.
local BINDING_ACTIONS = { CreateBinding = true, GetBinding = true, DeleteBinding = true }
local function add_checks(name, def)
  -- A binding is named by all three of ProjectName, DatasetName and URI,
  -- which the service requires though the SDK marks only ProjectName. Only
  -- CreateBinding checks the whole URI form: the others name a binding that
  -- exists, and the service says if not.
  if BINDING_ACTIONS[name] then
    local p = def.params
    p.DatasetName.required, p.URI.required = true, true
    p.URI.check = name == "CreateBinding" and oss_uri_problem or oss_scheme_problem
  end
  -- A page size is a whole number; a paging action takes 0 (the service's
  -- default) up to its documented largest page (`max_results` in the API
  -- description: 200 or 100). Other limits the service checks.
  local m = def.params.MaxResults
  if m and m.type == "number" then
    m.integer, m.min, m.max = true, 0, def.max_results
  end
end

local schema  -- imm.schema, loaded by the first action read
local function load_schema()
  if not schema then
    schema = require "imm.schema"
    -- tables built before (by imm.api) get the checks too; each once
    for name, def in pairs(schema.actions) do add_checks(name, def) end
    schema.on_build = add_checks
  end
  return schema
end

-- Read once: a table a caller removed (as a spec does, to play an action
-- outside the description) stays removed.
local served = {}
setmetatable(actions, { __index = function(t, name)
  if served[name] or type(name) ~= "string" then return nil end
  local def = load_schema().action(name)
  if def then
    served[name] = true
    rawset(t, name, def)
  end
  return def
end })

--- Every action with a table in `actions` (a set of names), built or not.
-- @treturn table
function _M.action_names()
  local set = {}
  for name in pairs(load_schema().action_names) do set[name] = true end
  for name in pairs(actions) do set[name] = true end
  return set
end

-- `models`: the request models (shapes of `core.json_encode`), every one
-- built, on first read; `imm.api.models`.
setmetatable(_M, { __index = function(t, k)
  if k == "models" then
    local m = require("imm.api").models
    rawset(t, k, m)
    return m
  end
end })

-- SimpleQuery documents 100 files a page, or 2000 groups when it asks for
-- Aggregations.
local AGGREGATED_MAX = 2000

--- The largest page `action` documents for these parameters, or nil when
-- it documents none.
-- @tparam string action
-- @tparam[opt] table params
-- @treturn number|nil
function _M.max_page_size(action, params)
  local def = actions[action]
  if not def then return nil end
  if action == "SimpleQuery" and type(params) == "table" and params.Aggregations ~= nil then
    return AGGREGATED_MAX
  end
  return def.max_results
end

--- Actions the service renamed: old name -> the name in the schema.
_M.renamed = { ListFigureClusters = "QueryFigureClusters" }

-- The verbs of actions that only read (tools/gen_api.py applies the same
-- rule to the schemas; this one is for actions without a schema).
local READ_VERBS = { Get = true, List = true, Query = true, Search = true, Detect = true, Compare = true,
  Extract = true, Contextual = true }

--- Does `action`'s name say it only reads? Its first word is Get, List,
-- Query, Search, Detect, Compare, Extract or Contextual, or it starts with
-- BatchGet or ends with Query.
-- @tparam string action
-- @treturn boolean
function _M.reads(action)
  local verb = match(action, "^%u[%l%d]*")
  return (verb ~= nil and READ_VERBS[verb] == true) or find(action, "^BatchGet") ~= nil
    or find(action, ".Query$") ~= nil
end

--- Is repeating `action` harmless? Its schema says (the rule of `reads`,
-- applied by the generator); for an action without one, `reads` decides.
-- `override` (a boolean, from the `idempotent` call option) wins over both.
-- @tparam string action
-- @tparam[opt] boolean override
-- @treturn boolean
function _M.is_idempotent(action, override)
  if override ~= nil then return override end
  local def = actions[action]
  if def then return def.idempotent == true end
  return _M.reads(action)
end

--- The closest name among `candidates` (a set), or nil when none is close.
function _M.suggest(name, candidates)
  return hints.suggest(name, candidates)
end

local function hint_text(name, candidates)
  return hints.hint_text(name, candidates)
end

--- The first key of `opts` that `known` (a set) lacks, as an
-- InvalidParameter error naming `what` ("client option", ...) with a
-- did-you-mean hint; nil when every key is known.
-- @usage local err = operations.unknown_key(opts, { method = true }, "call option")
function _M.unknown_key(opts, known, what)
  for k in pairs(opts) do
    if known[k] == nil then
      return errors.invalid(format("unknown %s %q%s", what, tostring(k), hint_text(k, known)))
    end
  end
end

local function is_integer(v)
  return type(v) == "number" and v == floor(v) and v > -huge and v < huge
end

local function finite(v)
  return v == v and v > -huge and v < huge
end

local function describe(v)
  return shapes.describe(v)
end

--- A shape in words ("array of string", "CreateMediaConvertTaskRequestTargets").
-- @param shape a shape of `core.json_encode`
-- @treturn string
function _M.describe_shape(shape)
  if shape == nil then return "any" end
  if type(shape) == "string" then return shape end
  if shape.array then return "array of " .. _M.describe_shape(shape.array) end
  if shape.map then return "map of " .. _M.describe_shape(shape.map) end
  for name, m in pairs(schema and schema.models or {}) do
    if m == shape then return name end
  end
  return "object"
end

-- CR and LF are refused in the text values of an action without a schema,
-- as they always were. The actions of the schema send them, as the SDK does
-- (DetectTextAnomaly's Content is text): every value is percent-encoded
-- wherever it travels, so none can break a header.
local function crlf_error(action, name)
  return nil, errors.invalid(format("%s: %s must not contain CR or LF", action, name))
end

-- A JSON parameter: see imm.shapes.
local function json_value(action, name, shape, v)
  return shapes.json_value(action, name, shape, v)
end

local function number_value(action, name, spec, v, max)
  if spec.integer then
    if not is_integer(v) then
      if max then
        return nil, errors.invalid(format("%s: %s must be an integer from %d to %d, got %s",
          action, name, spec.min, max, describe(v)))
      end
      return nil, errors.invalid(format("%s: %s must be an integer, got %s", action, name, describe(v)))
    end
    if (spec.min and v < spec.min) or (max and v > max) then
      if max then
        return nil, errors.invalid(format("%s: %s must be from %d to %d, got %s",
          action, name, spec.min, max, describe(v)))
      end
      return nil, errors.invalid(format("%s: %s must be at least %d, got %s", action, name, spec.min, describe(v)))
    end
  elseif type(v) ~= "number" or not finite(v) then
    return nil, errors.invalid(format("%s: %s must be a finite number, got %s", action, name, describe(v)))
  end
  local s, err = number_text(v)
  if not s then return nil, errors.invalid(format("%s: %s: %s", action, name, tostring(err))) end
  return s
end

local function check_value(action, name, spec, v, params)
  if spec.json then return json_value(action, name, spec.type, v) end
  local t = spec.type
  if t == "number" then
    local max = spec.max
    if max and name == "MaxResults" then max = _M.max_page_size(action, params) end
    return number_value(action, name, spec, v, max)
  end
  if t == "boolean" then
    if type(v) ~= "boolean" then
      return nil, errors.invalid(format("%s: %s must be a boolean, got %s", action, name, describe(v)))
    end
    return v and "true" or "false"
  end
  -- string
  if type(v) ~= "string" then
    return nil, errors.invalid(format("%s: %s must be a string, got %s", action, name, describe(v)))
  end
  if spec.required and v == "" then
    return nil, errors.invalid(format("%s: %s must not be empty", action, name), "MissingParameter")
  end
  local problem = spec.check and spec.check(v)
  if problem then
    return nil, errors.invalid(format("%s: %s %s, got %s", action, name, problem, describe(v)))
  end
  return v
end

-- A value of an action without a schema: a string as it is, a number as
-- its shortest text, a boolean as true/false, a table as one JSON text
-- (what every structured parameter of the SDK is).
local function generic_value(action, name, v)
  local t = type(v)
  if t == "string" then
    if find(v, "[\r\n]") then return crlf_error(action, name) end
    return v
  end
  if t == "number" then
    local s = finite(v) and number_text(v)
    if not s then return nil, errors.invalid(format("%s: %s is not a finite number", action, name)) end
    return s
  end
  if t == "boolean" then return v and "true" or "false" end
  if t == "table" then
    local proxy = shapes.proxy_path(v, name, 0)
    if proxy then return shapes.proxy_error(action, proxy) end
    if next(v) == nil then
      return nil, errors.invalid(format("%s: %s is an empty table, which could mean [] or {}: "
        .. "leave it out, or pass the JSON text as a string", action, name))
    end
    local s, err = json_encode(v)
    if not s then
      return nil, errors.invalid(format("%s: %s cannot be encoded as JSON: %s", action, name, tostring(err)))
    end
    return s
  end
  return nil, errors.invalid(format("%s: %s must be a string, number, boolean or table, got %s",
    action, name, t))
end

--- The most bytes the parameters of one request may take once
-- percent-encoded, as the `name=value` pairs joined by `&` that are sent:
-- in the query (the URL) and in a form body. libcurl 7.88 builds the request
-- line and headers in 1 MiB at most (over it, or over a URL of 8000000
-- bytes, it fails as if out of memory); half of that is left to the common
-- parameters, the signature and the headers. A form body has no such bound:
-- its limit keeps a mistaken value from being encoded and sent whole.
_M.MAX_QUERY_BYTES = 512 * 1024
_M.MAX_BODY_BYTES = 8 * 1024 * 1024

-- The length of s percent-encoded (RFC 3986, as the signer encodes it).
local function encoded_len(s)
  local _, n = gsub(s, "[^A-Za-z0-9%-%._~]", "")
  return #s + 2 * n
end

-- InvalidParameter naming the largest parameter when the encoded pairs of
-- `params` (name -> string) take more than `limit` bytes, else nil.
local function size_problem(action, params, place, limit)
  -- at most 3 bytes per byte encoded: most calls end here, with no copy made
  local bound = -1
  for name, v in pairs(params) do bound = bound + 3 * (#name + #v) + 2 end
  if bound <= limit then return nil end
  local total, largest, largest_n = -1, nil, -1
  for name, v in pairs(params) do
    local n = encoded_len(name) + 1 + encoded_len(v)
    total = total + n + 1
    if n > largest_n or (n == largest_n and name < largest) then largest, largest_n = name, n end
  end
  if total <= limit then return nil end
  return errors.invalid(format("%s: %s is too large: the parameters in the %s would take %d bytes "
    .. "percent-encoded, over the limit of %d", action, largest, place, total, limit))
end

--- Checks `params` for `action` and encodes them as the official SDK does:
-- two tables of strings, ready to sign.
--
-- For an action with a schema, each name must be one of its parameters and
-- each value of its type: a string, a number (sent as its shortest text,
-- integers in full: `0.7`, `202405170000123`), a boolean, or, for a
-- structured parameter, a table checked against the schema at every depth
-- and sent as one JSON text (an empty table is `[]` or `{}` as the schema
-- says), or that JSON text as a string, sent as it is once it parses as
-- JSON of the right shape. Required parameters must be there.
--
-- For an action without a schema (the escape hatch), a string, number or
-- boolean is sent as text and a non-empty table as one JSON text, all in
-- the query.
--
-- Every value is percent-encoded where it travels. Raw CR and LF are
-- refused only in the text values of an action without a schema and in
-- binding URIs; in a JSON value encoded from a table they are escaped (`\n`).
-- @tparam string action e.g. "ListBindings"
-- @tparam table params
-- @treturn table query (name -> string)
-- @treturn table|nil body (name -> string) for an action that sends a form
--   body (`def.form`), even when empty; nil otherwise
-- @return nil, err on bad input
function _M.validate(action, params)
  if type(action) ~= "string" or not match(action, "^[A-Za-z][A-Za-z0-9]*$") then
    return nil, errors.invalid("action must be an API action name such as \"ListBindings\", got "
      .. describe(action))
  end
  if params == nil then params = {} end
  if type(params) ~= "table" then
    return nil, errors.invalid(format("%s: parameters must be a table, got %s", action, type(params)))
  end
  local def = actions[action]
  local query, body = {}, def and def.form and {} or nil
  for name, v in pairs(params) do
    if type(name) ~= "string" then
      return nil, errors.invalid(format("%s: parameter names must be strings, got %s",
        action, describe(name)))
    end
    local s, err
    local spec = def and def.params[name]
    if def and not spec then
      return nil, errors.invalid(format("%s: unknown parameter %s%s", action, describe(name),
        hint_text(name, def.params)))
    end
    if spec then
      s, err = check_value(action, name, spec, v, params)
    else
      s, err = generic_value(action, name, v)
    end
    if not s then return nil, err end
    if spec and spec.body then body[name] = s else query[name] = s end
  end
  if def then
    for name, spec in pairs(def.params) do
      if spec.required and params[name] == nil then
        return nil, errors.invalid(format("%s: %s is required", action, name), "MissingParameter")
      end
    end
  end
  local too_large = size_problem(action, query, "query", _M.MAX_QUERY_BYTES)
    or body and size_problem(action, body, "form body", _M.MAX_BODY_BYTES)
  if too_large then return nil, too_large end
  return query, body
end

--- The parameters of `action` in order of name, for help texts: each
-- `{ name =, type = "words", where = "query"|"body", json = bool, required = bool }`.
-- @tparam string action
-- @treturn table|nil nil when the action has no schema
function _M.describe_params(action)
  local def = actions[action]
  if not def then return nil end
  local list = {}
  for name, spec in pairs(def.params) do
    list[#list + 1] = { name = name, type = _M.describe_shape(spec.type), where = spec.body and "body" or "query",
      json = spec.json == true, required = spec.required == true }
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

return _M
