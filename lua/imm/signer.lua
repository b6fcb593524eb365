--- Request signing: V3 (ACS3-HMAC-SHA256, ACS3-HMAC-SM3) and the legacy V2
-- RPC signature, computed by the C core (OpenSSL).
--
-- This module decides which headers and common parameters a request
-- carries; `imm.core` does the canonicalisation and the cryptography. The
-- clock and the nonce come from the caller, so tests can make signatures
-- deterministic.
-- @module imm.signer

local core = require "imm.core"
local date, pairs, ipairs, next, sort, concat = os.date, pairs, ipairs, next, table.sort, table.concat
local percent_encode = core.percent_encode

local _M = {}

_M.ALGORITHMS = { ["ACS3-HMAC-SHA256"] = "v3", ["ACS3-HMAC-SM3"] = "v3", v2 = "v2" }

local HASH_OF = { ["ACS3-HMAC-SHA256"] = "sha256", ["ACS3-HMAC-SM3"] = "sm3" }
local empty_hash = {}  -- algorithm -> hash of the empty body, computed once

-- The last second formatted: calls within one second share it, and
-- os.date (a C call, outside LuaJIT's traces) runs once per second.
local last_t, last_stamp

--- UTC timestamp in the form both signatures use.
function _M.timestamp(t)
  if t ~= nil and t == last_t then return last_stamp end
  local s = date("!%Y-%m-%dT%H:%M:%SZ", t)
  if t ~= nil then last_t, last_stamp = t, s end
  return s
end

-- The last secret's HMAC key (`imm.core.hmac_key`): the two padded blocks
-- of the key are hashed when it is made, not twice per request. One entry:
-- other credentials (a refresh, another client) replace it.
local key_alg, key_secret, key_obj

--- The secret as `imm.core.sign_v3` takes it fastest: the cached HMAC key
-- of the last secret and algorithm, made anew when either changes (or the
-- secret itself when no key can be made).
-- @tparam string algorithm "ACS3-HMAC-SHA256" or "ACS3-HMAC-SM3"
-- @tparam string secret
-- @return a key userdata, or the secret
-- @usage local key = signer.hmac_key("ACS3-HMAC-SHA256", creds.access_key_secret)
function _M.hmac_key(algorithm, secret)
  if secret ~= key_secret or algorithm ~= key_alg then
    if type(secret) ~= "string" or not core.hmac_key then return secret end
    local k = core.hmac_key(algorithm, secret)
    if not k then return secret end
    key_alg, key_secret, key_obj = algorithm, secret, k
  end
  return key_obj
end

--- Hex hash of a body for `x-acs-content-sha256` (SHA-256 or SM3).
function _M.payload_hash(algorithm, body)
  if body == nil or body == "" then
    local h = empty_hash[algorithm]
    if not h then
      h = core.hash_hex(HASH_OF[algorithm], "")
      empty_hash[algorithm] = h
    end
    return h
  end
  return core.hash_hex(HASH_OF[algorithm], body)
end

_M.FORM_TYPE = "application/x-www-form-urlencoded"

-- name=value pairs of `t`, sorted by name, RFC 3986 percent-encoded (a
-- space is %20): the form body, and the V2 query when a body takes some
-- of the signed parameters.
local function encode_pairs(t, skip)
  local names = {}
  for k in pairs(t) do
    if not (skip and skip[k]) then names[#names + 1] = k end
  end
  sort(names)
  for i, k in ipairs(names) do names[i] = percent_encode(k) .. "=" .. percent_encode(t[k]) end
  return concat(names, "&")
end

--- An x-www-form-urlencoded body of `params` (name -> string).
-- @tparam table params
-- @treturn string
-- @usage local body = signer.form_body{ Messages = "[]" }
function _M.form_body(params)
  return encode_pairs(params)
end

--- Signs a request.
-- @tparam table r fields: `algorithm`, `method`, `path`, `authority` (Host),
--   `action`, `version`, `query` (name -> string), `form` (name -> string:
--   parameters that travel in an x-www-form-urlencoded body; the body is
--   sent, with its content type, whenever `form` is a table, even empty),
--   `body` (without `form`), `date` (epoch seconds), `nonce`,
--   `access_key_id`, `access_key_secret`, `security_token`, `debug`,
--   `headers` (extra headers, lowercase name -> value: call option
--   `headers`, checked by `imm.callopts`).
--   V3 hashes the body into `x-acs-content-sha256`; V2 signs the form
--   parameters with the query ones, as the official openapi-util does.
--   Extra headers are signed as the official SDK signs them: with V3, the
--   `x-acs-*` ones (with host and content-type); the others, and every one
--   with V2, are sent unsigned.
-- @treturn table `{ query = "encoded query string", headers = {name -> value},
--   body = the body to send, canonical_request = ..., string_to_sign = ... }`
--   (the last two with `debug`)
-- @return nil, code, message when signing failed
function _M.sign(r)
  local algorithm = r.algorithm
  local form, body, content_type = r.form, r.body or "", r.content_type
  if form then body, content_type = encode_pairs(form), _M.FORM_TYPE end
  if algorithm == "v2" then
    local p = {}
    for k, v in pairs(r.query) do p[k] = v end
    if form then
      for k, v in pairs(form) do p[k] = v end
    end
    p.Action = r.action
    p.Version = r.version
    p.Format = "JSON"
    p.AccessKeyId = r.access_key_id
    p.SignatureMethod = "HMAC-SHA1"
    p.SignatureVersion = "1.0"
    p.SignatureNonce = r.nonce
    p.Timestamp = _M.timestamp(r.date)
    p.SecurityToken = r.security_token
    local q, sig, sts = core.sign_v2(r.method, p, r.access_key_secret, r.debug)
    if not q then return nil, sig, sts end
    local headers = { host = r.authority }
    if r.headers then
      for k, v in pairs(r.headers) do headers[k] = v end
    end
    if form then
      headers["content-type"] = content_type
      -- signed with the rest, but sent in the body only
      if next(form) ~= nil then q = encode_pairs(p, form) .. "&Signature=" .. percent_encode(sig) end
    end
    return { query = q, headers = headers, body = body, signature = sig, string_to_sign = sts }
  end

  local payload = _M.payload_hash(algorithm, body)
  local h = {
    host = r.authority,
    ["x-acs-action"] = r.action,
    ["x-acs-version"] = r.version,
    ["x-acs-date"] = _M.timestamp(r.date),
    ["x-acs-signature-nonce"] = r.nonce,
    ["x-acs-content-sha256"] = payload,
  }
  if r.security_token then
    h["x-acs-security-token"] = r.security_token
    h["x-acs-accesskey-id"] = r.access_key_id
  end
  if content_type then h["content-type"] = content_type end
  if r.headers then
    -- the C signer signs host, content-type and x-acs-* only, as
    -- openapi-util does: the others travel unsigned
    for k, v in pairs(r.headers) do h[k] = v end
  end
  local q, auth, creq, sts = core.sign_v3(algorithm, r.method, r.path or "/", r.query, h,
    payload, r.access_key_id, _M.hmac_key(algorithm, r.access_key_secret), r.debug)
  if not q then return nil, auth, creq end
  h.authorization = auth
  return { query = q, headers = h, body = body, canonical_request = creq, string_to_sign = sts }
end

return _M
