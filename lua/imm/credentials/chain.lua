--- A chain of providers: the first that yields credentials is kept.
--
-- The kept provider answers the next calls (so its cache and its refresh
-- carry on). If it fails later, the chain is walked again from the start
-- in the same call, instead of staying stuck on it. When no provider
-- yields, one `NoCredentials` error names every provider tried and why, and
-- the next call walks the chain again.
-- @module imm.credentials.chain

local type, tostring, format, concat = type, tostring, string.format, table.concat
local errors = require "imm.errors"
local base = require "imm.credentials.base"

local _M = {}

local function label(p, i)
  return type(p.name) == "string" and p.name or ("#" .. i)
end

--- Tries providers in order and keeps the first that yields credentials.
-- @tparam table list providers (tables with a `get` method)
-- @tparam[opt] table opts `debug` (true, or a function receiving trace lines)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err (`NoCredentials`, with `err.providers` = `{ {name, code, message}, ... }`)
--   when no provider yields
-- @usage local p = imm.credentials.chain{ imm.credentials.env(), imm.credentials.ecs_ram_role() }
---@param list imm.CredentialsProvider[]
---@param opts imm.ChainOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(list, opts)
  if type(list) ~= "table" or #list == 0 then
    return nil, errors.invalid("credentials.chain takes a non-empty list of providers")
  end
  for i = 1, #list do
    if type(list[i]) ~= "table" or type(list[i].get) ~= "function" then
      return nil, errors.invalid(format("credentials.chain: entry %d is not a provider", i))
    end
  end
  local o, err = base.options("credentials.chain", opts, { debug = base.COMMON.debug, env = base.COMMON.env })
  if not o then return nil, err end
  local trace = base.tracer("chain", o)
  local n = #list
  local current  -- index of the kept provider

  return base.provider("chain", function(get_opts)
    -- each provider gets what is left of the caller's time
    local deadline = base.deadline(get_opts)
    local reasons = {}
    local function failed(i, e)
      reasons[i] = {
        name = label(list[i], i),
        code = type(e) == "table" and e.code or "NoCredentials",
        message = type(e) == "table" and tostring(e.message) or tostring(e or "no credentials"),
      }
      trace("%s: %s", reasons[i].name, reasons[i].message)
    end
    if current then
      local c, e = list[current]:get(base.left(deadline))
      if c then return c end
      failed(current, e)
      trace("%s no longer yields credentials; walking the chain again", label(list[current], current))
    end
    for i = 1, n do
      if not reasons[i] then
        local c, e = list[i]:get(base.left(deadline))
        if c then
          if current ~= i then trace("using %s", label(list[i], i)) end
          current = i
          return c
        end
        failed(i, e)
      end
    end
    current = nil
    local why, tried = {}, {}
    for i = 1, n do
      why[i] = reasons[i].name .. ": " .. reasons[i].message
      tried[i] = reasons[i]
    end
    return nil, errors.new("NoCredentials", "no credentials found (" .. concat(why, "; ") .. ")",
      { retryable = false, providers = tried })
  end)
end

return _M
