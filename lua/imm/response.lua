--- Classifies an HTTP reply into a result table or an error value.
--
-- Pure: no I/O and no state, so the fuzzer drives exactly the path the
-- client uses (bytes -> decoder -> shape checks -> tables or `nil, err`).
-- @module imm.response

local type, tostring, tonumber, next, format = type, tostring, tonumber, next, string.format
local match, lower, find = string.match, string.lower, string.find
local core = require "imm.core"
local errors = require "imm.errors"
local in_place = require("imm.decode").in_place

local _M = {}

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
  jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

--- Epoch seconds of an HTTP `Date` header (RFC 9110 IMF-fixdate), or nil.
-- Computed by hand: os.time() would read the date as local time.
function _M.http_date(s)
  if type(s) ~= "string" then return nil end
  local d, mon, y, h, mi, se = match(s, "^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = mon and MONTHS[lower(mon)]
  if not m then return nil end
  y, d = tonumber(y), tonumber(d)
  if m <= 2 then y, m = y - 1, m + 12 end
  local days = 365 * y + (y - y % 4) / 4 - (y - y % 100) / 100 + (y - y % 400) / 400
    + (153 * (m - 3) + 2 - (153 * (m - 3) + 2) % 5) / 5 + d - 719469
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

local function is_array(t)
  return t[1] ~= nil
end

--- Is every element of a response list an object? A pager hands the
-- elements out one by one, and `false` or a number there would break its
-- contract (an item, or `false, err` once). Returns the index of the first
-- element that is not, or nil.
-- @tparam table list
-- @tparam[opt] integer n how many elements (default `#list`)
-- In C (`imm.core.bad_element`): the same loop in Lua was a tenth of a
-- page's decoding on Lua 5.4. The Lua loop stays for a core without it
-- (the fuzz harness's, which has only the decoder).
_M.bad_element = core.bad_element or function(list, n)
  for i = 1, n or #list do
    local e = list[i]
    if type(e) ~= "table" or e[1] ~= nil then return i end
  end
  return nil
end

-- Read only on failure: a transport may parse its headers when first read.
local function request_id_of(res)
  local headers = res.headers
  return headers and headers["x-acs-request-id"]
end

local function invalid(message, status, request_id)
  return nil, errors.new("InvalidResponse", message, { status = status, request_id = request_id, retryable = false })
end

--- Turns a transport result into the decoded response or an error.
-- @tparam table res `{ status, headers, body }` from a transport
-- @tparam function decode a decoder (see `imm.decode`)
-- @tparam[opt] table def the action's definition (`items` names the list)
-- @return the response table, or nil, err (with `retry_after` and
--   `server_time` when the reply said so)
function _M.parse(res, decode, def)
  local status = res.status
  if status < 200 or status > 299 then
    local body, headers = res.body, res.headers or {}
    local err = errors.from_service(status, headers, (decode(body)), body)
    if status == 429 then
      -- Too Many Requests is throttling whatever the body says (a proxy's
      -- HTML page, nothing, another code): the request was refused unseen.
      if err.code == "InvalidResponse" then
        err.code = "Throttling"
        err.message = "HTTP 429 Too Many Requests (" .. err.message .. ")"
      end
      err.retryable = true
    end
    err.retry_after = errors.retry_after(headers)
    err.server_time = _M.http_date(headers.date)
    return nil, err
  end
  local v, derr, object
  local args = res.decode_body and in_place[decode]
  if args then
    -- the body decoded where the transport keeps it, never made a string
    v, object = res:decode_body(args.null, args.arrays, args.big)
    if v == nil then derr = object end
  else
    local body = res.body
    v, derr = decode(body)
    object = type(body) == "string" and find(body, "^%s*{") ~= nil
  end
  if v == nil then
    return nil, errors.new("InvalidResponse", "response is not valid JSON: " .. tostring(derr),
      { status = status, request_id = request_id_of(res), retryable = false })
  end
  -- `[]` decodes to the same empty table as `{}`: only the text tells them apart
  if type(v) ~= "table" or is_array(v) or not object then
    return invalid("response is not a JSON object", status, request_id_of(res))
  end
  if def and def.items then
    local items = v[def.items]
    if items == nil then
      v[def.items] = {}
    elseif type(items) ~= "table" or (next(items) ~= nil and not is_array(items)) then
      return invalid(format("%s in the response is not an array", def.items), status, v.RequestId or request_id_of(res))
    else
      local i = _M.bad_element(items)
      if i then
        return invalid(format("%s[%d] in the response is a %s, not an object", def.items, i,
          type(items[i]) == "userdata" and "null" or type(items[i])), status, v.RequestId or request_id_of(res))
      end
    end
    local token = v.NextToken
    if token == "" then
      v.NextToken = nil
    elseif token ~= nil and type(token) ~= "string" then
      return invalid("NextToken in the response is a " .. type(token) .. ", not a string", status,
        v.RequestId or request_id_of(res))
    end
  end
  return v
end

return _M
