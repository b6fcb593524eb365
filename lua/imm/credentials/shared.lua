--- Credentials kept in a `lua_shared_dict`, so that one refresh per expiry
-- serves every worker of an nginx (the client option `credentials_cache`).
--
-- The dict holds the credentials themselves, secret and token included,
-- under `key`: any Lua code running in that nginx can read them. The
-- refresh is single-flight across workers: the worker that wins a lock
-- (`add` with a TTL, so a worker that dies cannot keep it) asks the wrapped
-- provider; the others serve the still-valid copy, or, when there is none,
-- sleep (`ngx.sleep`) until the new one is stored or the call's deadline.
-- Credentials without an expiration (fixed keys) are never stored.
-- @module imm.credentials.shared

local type, tostring, tonumber, pairs, pcall, setmetatable = type, tostring, tonumber, pairs, pcall, setmetatable
local format, sub, find = string.format, string.sub, string.find
local min, floor = math.min, math.floor

local core = require "imm.core"
local base = require "imm.credentials.base"
local errors = require "imm.errors"

local _M = {}

local OPTIONS = { dict = "string", key = "string", lock_timeout = "number" }
local MARGIN_CAP = 300   -- refresh at most this long before expiry...
local MARGIN_SHARE = 0.2 -- ... or a fifth of the lifetime, if shorter
local WAIT_LIMIT = 30

local function pack(c, fetched)
  local t = c.security_token or ""
  return format("%.3f %.3f %d:%s%d:%s%d:%s", c.expiration, fetched, #c.access_key_id, c.access_key_id,
    #c.access_key_secret, c.access_key_secret, #t, t)
end

local function unpack_creds(v)
  if type(v) ~= "string" then return nil end
  local exp, fetched, pos = v:match("^(%S+) (%S+) ()")
  exp, fetched = tonumber(exp), tonumber(fetched)
  if not exp then return nil end
  local out = {}
  for i = 1, 3 do
    local colon = find(v, ":", pos, true)
    local n = colon and tonumber(sub(v, pos, colon - 1))
    if not n then return nil end
    out[i] = sub(v, colon + 1, colon + n)
    pos = colon + n + 1
  end
  return { access_key_id = out[1], access_key_secret = out[2],
    security_token = out[3] ~= "" and out[3] or nil, expiration = exp }, fetched
end

-- Seconds before expiry at which the shared copy counts as due: smaller
-- than the providers' own staleness (15 min or more), so the provider
-- asked under the lock really fetches instead of returning its cache.
local function margin(exp, fetched)
  return min(MARGIN_CAP, (exp - fetched) * MARGIN_SHARE)
end

--- Wraps `provider` so that its credentials live in a shared dict.
-- @tparam table provider any credentials provider
-- @tparam table o `dict` (a `lua_shared_dict` name), `key` (default
--   `"imm:creds:" .. provider.name`; one key per distinct credential),
--   `lock_timeout` (seconds a refresh may hold the lock; default 10)
-- @return provider, or nil, err (`InvalidParameter`, also outside nginx)
-- @usage local p = shared.new(imm.credentials.default(), { dict = "imm" })
function _M.new(provider, o)
  if type(o) ~= "table" then return nil, errors.invalid("credentials_cache must be a table") end
  for k, v in pairs(o) do
    if not OPTIONS[k] or type(v) ~= OPTIONS[k] then
      return nil, errors.invalid(format("credentials_cache: unknown option %s or not a %s", tostring(k),
        tostring(OPTIONS[k] or "known option")))
    end
  end
  if not o.dict then return nil, errors.invalid("credentials_cache needs dict, a lua_shared_dict name") end
  local ngx = rawget(_G, "ngx")
  local dict = type(ngx) == "table" and ngx.shared and ngx.shared[o.dict]
  if not dict then
    return nil, errors.invalid(format("credentials_cache: no lua_shared_dict named %q (only inside nginx)", o.dict))
  end
  local lock_timeout = o.lock_timeout or 10
  if not (lock_timeout > 0 and lock_timeout <= 300) then
    return nil, errors.invalid("credentials_cache: lock_timeout must be from 0 to 300 seconds")
  end
  local key = o.key or ("imm:creds:" .. tostring(provider.name))
  local lock = key .. ":lock"
  local pass_through = false  -- the provider gave credentials without expiration

  local function read(now)
    local c, fetched = unpack_creds(dict:get(key))
    if not c then return nil end
    return c, now < c.expiration - margin(c.expiration, fetched), now < c.expiration
  end

  local function refresh(opts, c, valid)
    -- the lock must go whatever the provider does (nginx runs LuaJIT, whose
    -- pcall a cosocket may yield across)
    local ok, nc, err = pcall(provider.get, provider, opts)
    if not ok then
      dict:delete(lock)
      return nil, errors.new("InvalidResponse", "credential provider raised: " .. tostring(nc), { retryable = false })
    end
    if nc and nc.expiration then
      ngx.update_time()
      local t = ngx.now()
      if nc.expiration > t then dict:set(key, pack(nc, t), nc.expiration - t) end
    elseif nc then
      pass_through = true
    end
    dict:delete(lock)
    if nc then return nc end
    if valid then return c end
    return nil, err
  end

  local function get(opts)
    -- a phase without ngx.sleep (log_by_lua, ...): the provider's own rules
    if pass_through or not require("imm.transport.ngx").phase_ok() then return provider:get(opts) end
    local deadline = base.deadline(opts)
    local limit = deadline and min(WAIT_LIMIT, deadline - core.monotonic()) or WAIT_LIMIT
    ngx.update_time()
    local stop = ngx.now() + limit
    repeat
      local c, fresh, valid = read(ngx.now())
      if fresh then return c end
      local hold = deadline and min(lock_timeout, deadline - core.monotonic()) or lock_timeout
      if hold > 0 and dict:add(lock, true, hold) then
        -- read again under the lock: another worker may have stored a fresh
        -- copy and let go of the lock between our read and our add
        ngx.update_time()
        local c2, fresh2, valid2 = read(ngx.now())
        if fresh2 then
          dict:delete(lock)
          return c2
        end
        if c2 then c, valid = c2, valid2 end
        return refresh(opts, c, valid)
      end
      -- another worker is refreshing: its still-valid copy meanwhile
      if valid then return c end
      ngx.sleep(0.01)
      ngx.update_time()
    until ngx.now() >= stop
    return nil, errors.new("Timeout", format("waited %gs for another worker's credential refresh",
      floor(limit * 1000 + 0.5) / 1000), { retryable = true })
  end

  return setmetatable({ name = "shared(" .. tostring(provider.name) .. ")",
    get = function(_, opts) return get(opts) end }, base.Provider)
end

return _M
