--- The hints error messages carry: the name a typo meant ("did you
-- mean"), and what to do about an endpoint that could not be reached. Only
-- error paths need them, so they load on first use.
-- @module imm.hints

local type, pairs, ipairs, format = type, pairs, ipairs, string.format
local floor, huge, lower, byte, match, find, concat = math.floor, math.huge, string.lower, string.byte,
  string.match, string.find, table.concat

local _M = {}

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

--- `name`'s hint among `candidates`: ` (did you mean "X"?)`, or "".
function _M.hint_text(name, candidates)
  local hint = type(name) == "string" and _M.suggest(name, candidates)
  return hint and format(" (did you mean %q?)", hint) or ""
end

--- IMM's regions (API 2020-09-30), from the service's endpoint list of
-- January 2026, without the ones being closed (ap-southeast-2, ap-south-1).
-- Only the hint for a region that does not resolve reads it: any region
-- that matches [a-z0-9-]+ is still accepted, so a new one works at once.
_M.REGIONS = {
  "cn-qingdao", "cn-beijing", "cn-zhangjiakou", "cn-wulanchabu", "cn-hangzhou", "cn-shanghai",
  "cn-shenzhen", "cn-guangzhou", "cn-chengdu", "cn-hongkong", "ap-southeast-1", "ap-southeast-5",
  "eu-central-1", "eu-west-1", "us-east-1", "us-west-1",
}

local function known_region(region)
  for _, r in ipairs(_M.REGIONS) do
    if r == region then return true end
  end
  return false
end

--- What to do about a failure to reach `ep`, or nil: a TLS handshake that
-- met a plain HTTP server, or a host of IMM's that does not resolve (an
-- unknown region, or a VPC endpoint used outside a VPC).
-- @tparam table ep from `resolve`
-- @tparam table err the transport's error
-- @treturn string|nil the hint
-- @usage local hint = hints.endpoint(client.endpoint, err)
function _M.endpoint(ep, err)
  local msg = type(err.message) == "string" and lower(err.message) or ""
  if err.code == "TLSError" and find(msg, "wrong version number", 1, true) then
    return format("the server at %s answered in plain HTTP, not TLS: if it serves no HTTPS, use "
      .. "endpoint = \"http://%s\"", ep.authority, ep.authority)
  end
  if err.code == "ConnectionFailed" and find(msg, "resolve", 1, true) then
    local vpc, region = match(ep.host, "^imm(%-?v?p?c?)%.([%w%-]+)%.aliyuncs%.com$")
    if not region then return nil end
    local list = concat(_M.REGIONS, ", ")
    if not known_region(region) then
      return format("%q is not one of IMM's regions: %s", region, list)
    end
    if vpc == "-vpc" then
      return format("%s resolves only inside an Alibaba Cloud VPC of %s; elsewhere leave network unset",
        ep.host, region)
    end
    return format("%s is an IMM region, but its endpoint did not resolve here: check this machine's DNS "
      .. "(IMM's regions: %s)", region, list)
  end
  return nil
end

return _M
