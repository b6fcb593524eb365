--- Client-side rate limiting: a token bucket per action, or one for all
-- actions, kept in the Lua state (every client of it with the same `key`),
-- in a `lua_shared_dict` (every worker of one nginx), or in Redis (every
-- host of a fleet).
--
-- The bucket is kept as GCRA's single number, the "theoretical arrival
-- time" (`tat`): one request every `1/rate` seconds, and up to `burst` at
-- once (default 1: the service counts its QPS per second, and any second
-- then sees at most `rate + burst - 1` starts). A request reserves its slot and then sleeps until it, so waiting
-- callers never poll; a slot later than what the call may still wait is
-- not taken, and the call fails with `RateLimited`.
--
-- Adaptive mode (AIMD): a `Throttling*` answer halves the rate (at most
-- once a second, never below `min_rate`), and each second without one gives
-- back a tenth of the configured rate.
-- @module imm.ratelimit

local type, tostring, pairs, setmetatable = type, tostring, pairs, setmetatable
local format, find = string.format, string.find
local floor, max, min, ceil, huge = math.floor, math.max, math.min, math.ceil, math.huge

local core = require "imm.core"
local errors = require "imm.errors"
local log = require "imm.log"

local _M = {}

local OPTIONS = {
  rate = "number", burst = "number", per_action = "boolean", adaptive = "boolean",
  min_rate = "number", max_wait = "number", dict = "string", redis = "table", key = "string",
}
local REDIS_OPTIONS = {
  host = "string", port = "number", password = "string", username = "string", db = "number",
  timeout = "number", pool_size = "number", keepalive = "number",
}

local function bad(msg) return nil, errors.invalid("rate_limit: " .. msg) end

local function check(t, allowed, what)
  for k, v in pairs(t) do
    if type(k) ~= "string" or not allowed[k] then
      return format("unknown %s %s", what, tostring(k))
    end
    if type(v) ~= allowed[k] then
      return format("%s %s must be a %s, got %s", what, k, allowed[k], type(v))
    end
  end
end

local function positive(v) return v == v and v > 0 and v < huge end

-- The whole bucket step, atomic on the Redis side. Times in microseconds
-- from the Redis server's own clock, so the hosts' clocks do not matter.
-- KEYS[1] the bucket; ARGV: interval, tolerance, longest wait (all µs).
-- Returns { 1, wait } when a slot was taken, { 0, wait } when refused.
local SCRIPT = [[
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tau, longest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local wait = tat - tau - now
if wait < 0 then wait = 0 end
if wait > longest then return { 0, math.floor(wait) } end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return { 1, math.floor(wait) }
]]

-- GCRA on a value held by a get/set pair: returns the new tat and the
-- wait, or nil and the wait when refused.
local function gcra(tat, now, interval, tau, longest)
  if not tat or tat < now then tat = now end
  local wait = max(0, tat - tau - now)
  if wait > longest then return nil, wait end
  return tat + interval, wait
end

-- -- Stores: step(key, interval, tau, longest) -> wait | nil, wait | nil, nil, message

-- The buckets of this Lua state, by key: clients with the same `key` share
-- one, as they would in a dict or in Redis.
local tats = {}

local function local_store()
  return {
    step = function(key, interval, tau, longest)
      local now = core.monotonic()
      local tat, wait = gcra(tats[key], now, interval, tau, longest)
      if not tat then return nil, wait end
      tats[key] = tat
      return wait
    end,
  }
end

local function dict_store(dict)
  local ngx = rawget(_G, "ngx")
  return {
    step = function(key, interval, tau, longest)
      -- shared dict operations are atomic one by one, not as a get/set pair:
      -- a short lock (add with a TTL, so a crashed worker cannot keep it)
      -- The holder is another worker (another process) that never yields
      -- while it holds the lock, so a short busy retry beats a sleep, which
      -- would delay this request by a timer tick or more.
      local lock = key .. ":lock"
      local tries = 0
      while not dict:add(lock, true, 0.1) do
        tries = tries + 1
        if tries > 1200 then return nil, nil, "the lock of " .. key .. " stays taken" end
        if tries % 100 == 0 then ngx.sleep(0.001) end
      end
      ngx.update_time()
      local now = ngx.now()
      local tat, wait = gcra(dict:get(key), now, interval, tau, longest)
      if tat then dict:set(key, tat, ceil(tat - now) + 1) end
      dict:delete(lock)
      if not tat then return nil, wait end
      return wait
    end,
  }
end

local function redis_store(o)
  local redis = require "imm.redis"
  local sha
  return {
    step = function(key, interval, tau, longest, timeout)
      sha = sha or redis.sha1_hex(SCRIPT)
      local sock, err = redis.connect(o, min(o.timeout or 0.5, timeout))
      if not sock then return nil, nil, err end
      local r
      r, err = redis.eval(sock, SCRIPT, sha, { key },
        { floor(interval * 1e6 + 0.5), floor(tau * 1e6 + 0.5), floor(min(longest, 3600) * 1e6) })
      if type(r) ~= "table" or type(r[1]) ~= "number" or type(r[2]) ~= "number" then
        redis.release(sock, o, true)
        return nil, nil, err or "redis: an unexpected reply to the bucket script"
      end
      redis.release(sock, o)
      if r[1] == 1 then return r[2] / 1e6 end
      return nil, r[2] / 1e6
    end,
  }
end

local Limiter = {}
Limiter.__index = Limiter

--- Checks the `rate_limit` client option and builds the limiter.
-- @tparam table o the option (see docs/api.md)
-- @return limiter, or nil, err (`InvalidParameter`)
-- @usage local lim, err = ratelimit.new{ rate = 20, burst = 20 }
function _M.new(o)
  if type(o) ~= "table" then return bad("must be a table") end
  local msg = check(o, OPTIONS, "option")
  if msg then return bad(msg) end
  if o.rate == nil or not positive(o.rate) then return bad("rate must be a positive number of requests a second") end
  local burst = o.burst or 1
  if burst < 1 or burst ~= floor(burst) or burst > 1e6 then return bad("burst must be an integer of at least 1") end
  local min_rate = o.min_rate or min(o.rate, max(o.rate / 20, 0.1))
  if not positive(min_rate) or min_rate > o.rate then return bad("min_rate must be positive and at most rate") end
  if o.max_wait ~= nil and not (o.max_wait >= 0 and o.max_wait < huge) then
    return bad("max_wait must be a number of seconds of at least 0")
  end
  if o.dict and o.redis then return bad("give dict or redis, not both") end
  local self = setmetatable({
    rate = o.rate, burst = burst, per_action = o.per_action == true, adaptive = o.adaptive == true,
    min_rate = min_rate, max_wait = o.max_wait or 10, key = o.key or "imm:rl",
    -- adaptive state, per client unless a shared dict holds it
    cur = o.rate,
  }, Limiter)
  local ngx = rawget(_G, "ngx")
  if o.dict then
    local dict = type(ngx) == "table" and ngx.shared and ngx.shared[o.dict]
    if not dict then return bad(format("no lua_shared_dict named %q (only inside nginx)", o.dict)) end
    self.store, self.dict = dict_store(dict), dict
  elseif o.redis then
    msg = check(o.redis, REDIS_OPTIONS, "redis option")
    if msg then return bad(msg) end
    if type(ngx) ~= "table" or not ngx.socket then return bad("redis needs nginx (ngx_lua cosockets)") end
    local r = {}
    for k, v in pairs(o.redis) do r[k] = v end
    r.host, r.port = r.host or "127.0.0.1", r.port or 6379
    if r.port ~= floor(r.port) or r.port < 1 or r.port > 65535 then return bad("redis port must be 1 to 65535") end
    if r.timeout ~= nil and not positive(r.timeout) then return bad("redis timeout must be positive") end
    -- pooled connections are authenticated: one pool per user, password and db
    r.pool = format("imm-redis:%s:%d:%d:%s:%s", r.host, r.port, r.db or 0, r.username or "",
      r.password and ngx.md5(r.password) or "")
    self.store = redis_store(r)
  else
    self.store = local_store()
  end
  return self
end

-- The rate in force (adaptive: shared through the dict when there is one).
function Limiter:_rate()
  if not self.adaptive then return self.rate end
  if self.dict then return self.dict:get(self.key .. ":rate") or self.rate end
  return self.cur
end

function Limiter:_set_rate(r)
  if self.dict then self.dict:set(self.key .. ":rate", r) else self.cur = r end
end

--- Takes a slot for `action`, sleeping until it comes (through `sleep`).
-- @tparam string action
-- @tparam number|nil left seconds left of the call's deadline (the wait is also at most `max_wait`)
-- @tparam function sleep `(seconds)`
-- @return true, or nil, err (`RateLimited`, not retryable, nothing sent)
-- @usage local ok, err = limiter:acquire("ListBindings", left, function(s) transport:sleep(s) end)
function Limiter:acquire(action, left, sleep)
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" and not require("imm.transport.ngx").phase_ok() then
    -- no sleeping here (log_by_lua, ...): the attempt itself answers UnsupportedPhase
    return true
  end
  local longest = self.max_wait
  if left then longest = min(longest, max(0, left)) end
  local rate = self:_rate()
  local interval = 1 / rate
  local key = self.per_action and (self.key .. ":" .. action) or (self.key .. ":*")
  local wait, need, err = self.store.step(key, interval, (self.burst - 1) * interval, longest,
    longest > 0 and longest or 0.1)
  if wait == nil and err then
    -- a limiter that cannot reach its store lets the call through (the
    -- service's own throttling still applies) and says so, once a minute
    local now = core.monotonic()
    if not self.warned or now - self.warned > 60 then
      self.warned = now
      log.warn("rate_limit: " .. tostring(err) .. " (calls go through unlimited meanwhile)")
    end
    return true
  end
  if wait == nil then
    return nil, errors.new("RateLimited", format("%s: no slot within %gs under the client's rate limit of %g/s "
      .. "(the next one is %.3fs away)", action, floor(longest * 1000 + 0.5) / 1000, rate, need),
      { retryable = false, sent = false, action = action })
  end
  if wait > 0 then sleep(wait) end
  return true
end

-- Adaptive state: the moments of the last cut and of the last gain, in the
-- dict when there is one (so the workers cut and grow one shared rate).
function Limiter:_mark(name, v)
  if self.dict then
    if v then self.dict:set(self.key .. ":" .. name, v) return v end
    return self.dict:get(self.key .. ":" .. name)
  end
  if v then self[name] = v return v end
  return self[name]
end

--- Adaptive mode: what an attempt's outcome says about the rate.
-- @tparam table|nil err the attempt's error, nil on success
-- @usage limiter:feedback(err)
function Limiter:feedback(err)
  if not self.adaptive then return end
  local now = core.monotonic()
  local cur = self:_rate()
  if err and (err.status == 429 or (type(err.code) == "string" and find(err.code, "^Throttling"))) then
    -- concurrent throttled attempts are one signal: cut once a second
    if now - (self:_mark("last_cut") or -huge) >= 1 then
      self:_mark("last_cut", now)
      self:_set_rate(max(self.min_rate, cur / 2))
    end
    self:_mark("last_gain", now)
  elseif cur < self.rate then
    -- a tenth of the configured rate back for each second since the last
    -- gain (or cut)
    local last = self:_mark("last_gain") or now
    if now > last then
      self:_mark("last_gain", now)
      self:_set_rate(min(self.rate, cur + (now - last) * self.rate / 10))
    end
  else
    self:_mark("last_gain", now)
  end
end

_M.SCRIPT = SCRIPT
return _M
