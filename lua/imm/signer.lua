--- Request signing: V3 (ACS3-HMAC-SHA256, ACS3-HMAC-SM3) and the legacy V2
-- RPC signature, computed by the C core (OpenSSL).
--
-- This module decides which headers and common parameters a request
-- carries; `imm.core` does the canonicalisation and the cryptography. The
-- clock and the nonce come from the caller, so tests can make signatures
-- deterministic.
-- @module imm.signer

local core = require "imm.core"
local date = os.date

local _M = {}

_M.ALGORITHMS = { ["ACS3-HMAC-SHA256"] = "v3", ["ACS3-HMAC-SM3"] = "v3", v2 = "v2" }

local HASH_OF = { ["ACS3-HMAC-SHA256"] = "sha256", ["ACS3-HMAC-SM3"] = "sm3" }
local empty_hash = {}  -- algorithm -> hash of the empty body, computed once

--- UTC timestamp in the form both signatures use.
function _M.timestamp(t)
  return date("!%Y-%m-%dT%H:%M:%SZ", t)
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

--- Signs a request.
-- @tparam table r fields: `algorithm`, `method`, `path`, `authority` (Host),
--   `action`, `version`, `query` (name -> string), `body`, `date` (epoch
--   seconds), `nonce`, `access_key_id`, `access_key_secret`,
--   `security_token`, `debug`.
-- @treturn table `{ query = "encoded query string", headers = {name -> value},
--   canonical_request = ..., string_to_sign = ... }` (the last two with `debug`)
-- @return nil, code, message when signing failed
function _M.sign(r)
  local algorithm = r.algorithm
  if algorithm == "v2" then
    local p = {}
    for k, v in pairs(r.query) do p[k] = v end
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
    return { query = q, headers = { host = r.authority }, signature = sig, string_to_sign = sts }
  end

  local payload = _M.payload_hash(algorithm, r.body)
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
  if r.content_type then h["content-type"] = r.content_type end
  local q, auth, creq, sts = core.sign_v3(algorithm, r.method, r.path or "/", r.query, h,
    payload, r.access_key_id, r.access_key_secret, r.debug)
  if not q then return nil, auth, creq end
  h.authorization = auth
  return { query = q, headers = h, canonical_request = creq, string_to_sign = sts }
end

return _M
