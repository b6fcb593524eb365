--- IMM's task notifications: the message IMM sends when a task ends, as
-- MNS, RocketMQ or EventBridge delivers it, and a receiver for MNS HTTP
-- push inside nginx.
--
-- `parse(body)` unwraps the delivery envelope (an MNS `<Notification>` in
-- XML or its JSON twin, the message base64-encoded or not, an EventBridge
-- CloudEvent with `data`, or the bare message as RocketMQ and MNS's
-- SIMPLIFIED format deliver it), then IMM's own envelope (`source`
-- "acs.imm", the task message as JSON text in `content`), and returns the
-- task message: `TaskId`, `TaskType`, `Status`, `Code`, `Message`,
-- `UserData`, `ProjectName`, `StartTime`, `EndTime` and every other field
-- IMM sent. docs/notifications.md says which envelope is recognised how.
--
-- `mns_handler(opts)` is an nginx content handler: it verifies MNS's push
-- signature (RSA-SHA1 with the certificate named by `x-mns-signing-cert-url`,
-- fetched from an allowed host only and cached by URL), then keeps the
-- notification in a `lua_shared_dict` under its TaskId, where `await` finds
-- it.
-- @module imm.notification

local core = require "imm.core"
local errors = require "imm.errors"

local type, tostring, tonumber, pairs, ipairs, pcall, rawget = type, tostring, tonumber, pairs, ipairs, pcall, rawget
local byte, char, sub, find, match, gsub, lower, format =
  string.byte, string.char, string.sub, string.find, string.match, string.gsub, string.lower, string.format
local concat, sort = table.concat, table.sort
local floor, min, max, abs = math.floor, math.min, math.max, math.abs

local _M = {}

--- The error code of everything `parse` refuses.
_M.INVALID = "InvalidNotification"

--- MNS's documented signing certificate host: the push request's
-- certificate URL starts with `https://mnstest.oss-cn-hangzhou.aliyuncs.com/`.
_M.MNS_CERT_HOSTS = { "mnstest.oss-cn-hangzhou.aliyuncs.com" }

local function invalid(msg)
  return nil, errors.new(_M.INVALID, msg, { retryable = false })
end

-- Base64 (RFC 4648, padded, white space ignored); nil for anything else.
-- In Lua rather than ngx.decode_base64, so parse runs outside nginx too.
local B64 = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do B64[byte(alphabet, i)] = i - 1 end
end
local function b64decode(s)
  s = gsub(s, "[ \t\r\n]", "")
  local n = #s
  if n == 0 or n % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, n, 4 do
    local a, b, c, d = byte(s, i, i + 3)
    local va, vb, vc, vd = B64[a], B64[b], B64[c], B64[d]
    if not va or not vb then return nil end
    local last = i + 3 == n
    if c == 61 then     -- "xx=="
      if d ~= 61 or not last then return nil end
      out[#out + 1] = char(va * 4 + floor(vb / 16))
    elseif not vc then
      return nil
    elseif d == 61 then -- "xxx="
      if not last then return nil end
      out[#out + 1] = char(va * 4 + floor(vb / 16), (vb % 16) * 16 + floor(vc / 4))
    elseif not vd then
      return nil
    else
      out[#out + 1] = char(va * 4 + floor(vb / 16), (vb % 16) * 16 + floor(vc / 4), (vc % 4) * 64 + vd)
    end
  end
  return concat(out)
end
_M._b64decode = b64decode

-- UTF-8 of a code point, for numeric character references.
local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local ENTITIES = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'" }

-- The text of an XML element's content: a CDATA section as is, else with
-- the five entities and character references replaced; nil if malformed.
local function xml_text(s)
  local cdata = match(s, "^%s*<!%[CDATA%[(.-)%]%]>%s*$")
  if cdata then return cdata end
  if find(s, "<", 1, true) then return nil end
  -- an "&" that starts no reference is malformed XML
  if find((gsub(s, "&[^;&]*;", "")), "&", 1, true) then return nil end
  local bad = false
  local out = gsub(s, "&([^;&]*);", function(e)
    local r = ENTITIES[e]
    if r then return r end
    local cp = match(e, "^#[xX](%x+)$")
    cp = cp and tonumber(cp, 16) or tonumber(match(e, "^#(%d+)$") or "")
    if cp and cp > 0 and cp <= 0x10FFFF and (cp < 0xD800 or cp > 0xDFFF) then return utf8_char(cp) end
    bad = true
    return ""
  end)
  if bad then return nil end
  return out
end

local MNS_FIELDS = { "TopicOwner", "TopicName", "Subscriber", "SubscriptionName", "MessageId",
  "MessageMD5", "MessageTag", "PublishTime" }

-- A JSON object (a table that is not an array), or nil.
local function json_object(text)
  local v = core.json_decode(text)
  if type(v) ~= "table" or v[1] ~= nil then return nil end
  return v
end

-- Without a BOM and surrounding white space. Not match("^%s*(.-)%s*$"),
-- which takes quadratic time on a long run of inner white space.
local function trim(s)
  if sub(s, 1, 3) == "\239\187\191" then s = sub(s, 4) end
  local i = find(s, "[^%s]")
  if not i then return "" end
  local j = #s
  while j > i do
    local c = byte(s, j)
    if c == 32 or (c >= 9 and c <= 13) then j = j - 1 else break end
  end
  return sub(s, i, j)
end

-- The content of the first <name>...</name>, found with plain searches, so
-- a body of many unclosed tags costs linear time.
local function element(root, name)
  local _, e = find(root, "<" .. name .. ">", 1, true)
  if not e then return nil end
  local c = find(root, "</" .. name .. ">", e + 1, true)
  if not c then return nil end
  return sub(root, e + 1, c - 1)
end

local message_object

-- The text of a message (JSON, or JSON in base64) to the task message.
local function message_text(text, envelope, where)
  text = trim(text)
  if sub(text, 1, 1) ~= "{" then
    local decoded = b64decode(text)
    if not decoded or sub(trim(decoded), 1, 1) ~= "{" then
      return invalid(where .. " is neither a JSON object nor one in base64")
    end
    envelope.base64 = true
    text = trim(decoded)
  end
  local obj = json_object(text)
  if not obj then return invalid(where .. " is not a JSON object") end
  return message_object(obj, envelope)
end

-- IMM's envelope (source "acs.imm", the message as JSON text in content),
-- or the task message itself, to the checked task message.
function message_object(obj, envelope)
  local content = obj.content
  if content ~= nil and (obj.source == "acs.imm" or (type(obj.type) == "string" and find(obj.type, "^imm:"))) then
    envelope.event_id, envelope.event_type = obj.id, obj.type
    envelope.subject, envelope.time = obj.subject, obj.time
    if type(content) == "string" then
      obj = json_object(trim(content))
      if not obj then return invalid("IMM's content is not a JSON object") end
    elseif type(content) == "table" then
      obj = content
    else
      return invalid("IMM's content is not a JSON object")
    end
  end
  if type(obj.TaskId) ~= "string" or obj.TaskId == "" then
    return invalid("not a task notification: no TaskId")
  end
  if type(obj.Status) ~= "string" or obj.Status == "" then
    return invalid("not a task notification: no Status")
  end
  for _, k in ipairs { "TaskType", "Code", "Message", "UserData", "ProjectName", "StartTime", "EndTime" } do
    if obj[k] ~= nil and type(obj[k]) ~= "string" then
      return invalid(format("not a task notification: %s is a %s", k, type(obj[k])))
    end
  end
  obj.envelope = envelope
  return obj
end

--- Turns an IMM task notification, as delivered, into a table.
--
-- Recognised, outermost first: an MNS `<Notification>` (XML) or the JSON
-- object of MNS's JSON format (`TopicName`/`MessageId` with `Message`); an
-- EventBridge CloudEvent (`specversion`, `data`); then IMM's envelope
-- (`source` "acs.imm" or `type` "imm:...", the task message in `content`);
-- else the task message itself. A message (MNS's `Message`, a string
-- `data`, or the whole body) may be base64-encoded JSON.
-- @tparam string body what MNS, RocketMQ or EventBridge delivered
-- @treturn table the task message (`TaskId`, `TaskType`, `Status`, `Code`,
--   `Message`, `UserData`, `ProjectName`, `StartTime`, `EndTime`, ...) with
--   `envelope`: `format` ("mns-xml", "mns-json", "cloudevents" or "plain"),
--   `base64`, MNS's `MessageId`, `TopicName`, ... and IMM's `event_id`,
--   `event_type`, `subject`, `time` when they were there
-- @return or nil, err (`InvalidNotification`) for anything else
-- @usage local n, err = notification.parse(body)
--   if n and n.Status == "Succeeded" then ... end
function _M.parse(body)
  if type(body) ~= "string" then
    return invalid("the notification body is a " .. type(body) .. ", not a string")
  end
  local text = trim(body)
  if text == "" then return invalid("the notification body is empty") end
  local first = sub(text, 1, 1)
  if first == "<" then
    local root = match(text, "^<%?xml.-%?>%s*(.*)$") or text
    if not find(root, "^<Notification[%s>]") then
      return invalid("an XML body that is not an MNS <Notification>")
    end
    local envelope = { format = "mns-xml" }
    for _, k in ipairs(MNS_FIELDS) do
      local v = element(root, k)
      envelope[k] = v and xml_text(v)
    end
    local m = element(root, "Message")
    if not m then return invalid("the MNS <Notification> has no <Message>") end
    m = xml_text(m)
    if not m then return invalid("the MNS <Message> is not well-formed XML text") end
    return message_text(m, envelope, "the MNS <Message>")
  end
  if first ~= "{" then
    return message_text(text, { format = "plain" }, "the notification body")
  end
  local obj = json_object(text)
  if not obj then return invalid("the notification body is not a JSON object") end
  if type(obj.Message) == "string" and (obj.TopicName ~= nil or obj.MessageId ~= nil) then
    local envelope = { format = "mns-json" }
    for _, k in ipairs(MNS_FIELDS) do
      if type(obj[k]) == "string" or type(obj[k]) == "number" then envelope[k] = obj[k] end
    end
    return message_text(obj.Message, envelope, "the MNS Message")
  end
  if obj.specversion ~= nil and obj.data ~= nil then
    local envelope = { format = "cloudevents", event_id = obj.id, event_type = obj.type,
      subject = obj.subject, time = obj.time }
    if type(obj.data) == "string" then return message_text(obj.data, envelope, "the CloudEvent's data") end
    if type(obj.data) ~= "table" then return invalid("the CloudEvent's data is not an object") end
    return message_object(obj.data, envelope)
  end
  return message_object(obj, { format = "plain" })
end

-- The nginx side ----------------------------------------------------------

local function in_nginx()
  local ngx = rawget(_G, "ngx")
  return type(ngx) == "table" and type(ngx.shared) == "table" and type(ngx.sleep) == "function"
end

local function bad_param(msg) return nil, errors.invalid(msg) end

--- Waits for the notification of a task, inside nginx.
--
-- Returns as soon as `mns_handler` (in any worker of this nginx) has kept a
-- notification for `task_id` in the shared dict `dict_name`, checking now
-- and then every 0.1 s with `ngx.sleep`, for at most `seconds`.
-- @tparam string dict_name a `lua_shared_dict`
-- @tparam string task_id the TaskId
-- @tparam number seconds how long to wait (0: look once)
-- @treturn table the notification, as `parse` returns it
-- @return or nil when none came within `seconds`
-- @return or nil, err: `InvalidParameter` for bad arguments or no such dict,
--   `UnsupportedPhase` outside nginx or in a phase without `ngx.sleep`,
--   `InvalidNotification` if what is kept does not parse
-- @usage local n, err = notification.await("imm_notify", task_id, 30)
function _M.await(dict_name, task_id, seconds)
  if type(dict_name) ~= "string" or dict_name == "" then return bad_param("dict_name must be a non-empty string") end
  if type(task_id) ~= "string" or task_id == "" then return bad_param("task_id must be a non-empty string") end
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds == math.huge then
    return bad_param("seconds must be a finite number >= 0")
  end
  if not in_nginx() then
    return nil, errors.new("UnsupportedPhase", "imm.notification.await runs inside nginx only "
      .. "(it waits with ngx.sleep on a lua_shared_dict); elsewhere poll with GetTask", { retryable = false })
  end
  local ngx = rawget(_G, "ngx")
  local dict = ngx.shared[dict_name]
  if not dict then return bad_param("no lua_shared_dict named " .. dict_name .. " in nginx.conf") end
  -- ngx.now() is the time cached by the event loop: updated here, or a
  -- wait that ends in less than a millisecond could loop on a stale clock
  ngx.update_time()
  local deadline = ngx.now() + seconds
  while true do
    local v = dict:get(task_id)
    if v then return _M.parse(v) end
    ngx.update_time()
    local left = deadline - ngx.now()
    if left <= 0 then return nil end
    local ok, err = pcall(ngx.sleep, max(0.001, min(0.1, left)))
    if not ok then
      return nil, errors.new("UnsupportedPhase", "imm.notification.await cannot sleep in nginx's "
        .. tostring(ngx.get_phase()) .. " phase: " .. tostring(err), { retryable = false, phase = ngx.get_phase() })
    end
  end
end

-- Certificates by URL, in this worker: MNS names a new URL when it changes
-- its certificate, so an entry never goes stale. Bounded, since URLs come
-- from requests (only from allowed hosts, but still).
local certs, ncerts, MAX_CERTS = {}, 0, 32

local function cert_allowed(url, hosts)
  local authority = match(url, "^https://([^/?#]+)/[^?#]*$")
  if not authority or find(authority, "@", 1, true) then return false end
  authority = lower(authority)
  for _, h in ipairs(hosts) do
    if authority == lower(h) then return true end
  end
  return false
end

-- The PEM at url: from this worker's cache, the optional shared dict, or
-- fetched. Returns pem, or nil, status, reason.
local function get_cert(url, o)
  local pem = certs[url]
  if pem then return pem end
  local ngx = rawget(_G, "ngx")
  local dict = o.cert_dict and ngx.shared[o.cert_dict]
  pem = dict and dict:get(url)
  if not pem then
    local t, err = require("imm.transport").open(o.transport, {
      connect_timeout = o.cert_timeout, timeout = o.cert_timeout, max_response_bytes = 65536,
    })
    if not t then return nil, 503, "no transport for the certificate: " .. tostring(err) end
    local res
    res, err = t:request({ method = "GET", url = url, headers = {} })
    if t.close then t:close() end
    if not res then return nil, 503, "the signing certificate could not be fetched: " .. tostring(err) end
    -- a 4xx from an allowed host is a URL MNS did not send: the request's fault
    if res.status ~= 200 then
      return nil, res.status < 500 and 403 or 503, "the signing certificate URL answered HTTP " .. res.status
    end
    pem = res.body
    if not find(pem, "-----BEGIN ", 1, true) then
      return nil, 403, "the signing certificate URL did not serve a PEM certificate"
    end
    if dict then dict:set(url, pem, o.cert_ttl) end
  end
  if ncerts >= MAX_CERTS then certs, ncerts = {}, 0 end
  certs[url], ncerts = pem, ncerts + 1
  return pem
end

local function forget_cert(url, o)
  if certs[url] then certs[url], ncerts = nil, ncerts - 1 end
  local ngx = rawget(_G, "ngx")
  local dict = o.cert_dict and ngx.shared[o.cert_dict]
  if dict then dict:delete(url) end
end

-- One value of a request header: nil if absent, false if repeated.
local function one(headers, name)
  local v = headers[name]
  if type(v) == "table" then return false end
  return v
end

-- MNS's string to sign: the method, Content-MD5, Content-Type and Date,
-- each x-mns-* header as "name:value" sorted by name, then the resource.
local function string_to_sign(method, headers, resource)
  local names = {}
  for k in pairs(headers) do
    local lk = lower(k)
    if sub(lk, 1, 6) == "x-mns-" then names[#names + 1] = lk end
  end
  sort(names)
  local parts = { method, one(headers, "content-md5") or "", one(headers, "content-type") or "",
    one(headers, "date") or "" }
  local out = concat(parts, "\n") .. "\n"
  for _, k in ipairs(names) do
    local v = headers[k]
    if type(v) == "table" then return nil end
    out = out .. k .. ":" .. v .. "\n"
  end
  return out .. resource
end
_M._string_to_sign = string_to_sign

local function check_opts(opts)
  if type(opts) ~= "table" then error("imm.notification.mns_handler: opts must be a table", 3) end
  if type(opts.dict) ~= "string" or opts.dict == "" then
    error("imm.notification.mns_handler: opts.dict must name a lua_shared_dict", 3)
  end
  local o = {
    dict = opts.dict, ttl = opts.ttl or 3600, max_skew = opts.max_skew or 900,
    cert_hosts = opts.cert_hosts or _M.MNS_CERT_HOSTS, cert_dict = opts.cert_dict,
    cert_ttl = opts.cert_ttl or 86400, cert_timeout = opts.cert_timeout or 5,
    max_body = opts.max_body or 262144, transport = opts.transport,
    on_notification = opts.on_notification,
  }
  for _, k in ipairs { "ttl", "max_skew", "cert_ttl", "cert_timeout", "max_body" } do
    local v = o[k]
    if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
      error("imm.notification.mns_handler: opts." .. k .. " must be a positive number", 3)
    end
  end
  if type(o.cert_hosts) ~= "table" or #o.cert_hosts == 0 then
    error("imm.notification.mns_handler: opts.cert_hosts must be a non-empty list of host names", 3)
  end
  for _, h in ipairs(o.cert_hosts) do
    if type(h) ~= "string" or h == "" then
      error("imm.notification.mns_handler: opts.cert_hosts must hold host names (strings)", 3)
    end
  end
  if o.cert_dict ~= nil and type(o.cert_dict) ~= "string" then
    error("imm.notification.mns_handler: opts.cert_dict must name a lua_shared_dict", 3)
  end
  if o.on_notification ~= nil and type(o.on_notification) ~= "function" then
    error("imm.notification.mns_handler: opts.on_notification must be a function", 3)
  end
  return o
end

-- The request body, from memory or from nginx's temporary file.
local function read_body(ngx, max_body)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local path = ngx.req.get_body_file()
  if not path then return "" end
  local f = io.open(path, "rb")
  if not f then return nil end
  body = f:read(max_body + 1)
  f:close()
  return body or ""
end

--- An nginx content handler for an MNS HTTP push endpoint.
--
-- For each POST it checks, in this order, and answers 403 on any failure:
-- the `Date` header within `max_skew` seconds of now (MNS documents 15
-- minutes); `Content-MD5` present and the MD5 of the body (as MNS writes it,
-- base64 of the hex digest, or of the raw digest); `x-mns-signing-cert-url`,
-- base64 of an `https://` URL on one of `cert_hosts`; the certificate at that
-- URL (cached by URL); the `Authorization` header, base64 of an RSA-SHA1
-- signature of MNS's string to sign, verified with its public key. Then
-- the body must `parse` (else 400), and is kept in the shared dict `dict`
-- under its TaskId for `ttl` seconds; the answer is 204. Only a failure of
-- ours (the certificate host unreachable, the dict full) is a 503, so that
-- MNS tries again.
-- @tparam table opts `dict` (required): the lua_shared_dict;
--   `ttl` (3600); `max_skew` (900); `cert_hosts` (the documented
--   `imm.notification.MNS_CERT_HOSTS`; exact `host` or `host:port`, https
--   only); `cert_dict`: a shared dict that also caches certificates, for
--   `cert_ttl` (86400) seconds; `cert_timeout` (5); `max_body` (262144);
--   `transport` (default: cosockets); `on_notification(n)`, called with
--   each stored notification
-- @treturn function the handler; raises on bad options
-- @usage location = /mns { content_by_lua_block {
--     require("imm.notification").mns_handler { dict = "imm_notify" }() } }
function _M.mns_handler(opts)
  local o = check_opts(opts)
  return function()
    local ngx = rawget(_G, "ngx")
    local function refuse(status, reason)
      ngx.log(ngx.WARN, "imm.notification: ", status, " ", reason)
      ngx.status = status
      ngx.header["Content-Type"] = "text/plain"
      ngx.say(reason)
      return ngx.exit(status)
    end
    local method = ngx.req.get_method()
    if method ~= "POST" then return refuse(405, "only POST is accepted") end
    local dict = ngx.shared[o.dict]
    if not dict then return refuse(503, "no lua_shared_dict named " .. o.dict) end
    local body = read_body(ngx, o.max_body)
    if not body then return refuse(503, "the request body could not be read") end
    if #body > o.max_body then return refuse(413, "the body is larger than " .. o.max_body .. " bytes") end

    local headers = ngx.req.get_headers(200)
    local auth, cert_b64 = one(headers, "authorization"), one(headers, "x-mns-signing-cert-url")
    local date, md5 = one(headers, "date"), one(headers, "content-md5")
    for name, v in pairs { Authorization = auth, ["x-mns-signing-cert-url"] = cert_b64, Date = date,
        ["Content-MD5"] = md5 } do
      if v == false then return refuse(403, name .. " appears more than once") end
    end
    if not auth then return refuse(403, "no Authorization header") end
    if not cert_b64 then return refuse(403, "no x-mns-signing-cert-url header") end
    if not date then return refuse(403, "no Date header") end
    if not md5 then return refuse(403, "no Content-MD5 header: the body would not be signed") end

    local t = ngx.parse_http_time(date)
    if not t then return refuse(403, "the Date header is not an HTTP date") end
    if abs(ngx.time() - t) > o.max_skew then
      return refuse(403, "the Date header is more than " .. o.max_skew .. " seconds from now")
    end
    if md5 ~= ngx.encode_base64(ngx.md5(body)) and md5 ~= ngx.encode_base64(ngx.md5_bin(body)) then
      return refuse(403, "Content-MD5 is not the MD5 of the body")
    end

    local url = ngx.decode_base64(cert_b64)
    if not url then return refuse(403, "x-mns-signing-cert-url is not base64") end
    if not cert_allowed(url, o.cert_hosts) then
      return refuse(403, "the signing certificate URL is not on an allowed https host")
    end
    local sig = ngx.decode_base64(auth)
    if not sig or sig == "" then return refuse(403, "the Authorization header is not base64") end
    local sts = string_to_sign(method, headers, ngx.var.request_uri)
    if not sts then return refuse(403, "an x-mns- header appears more than once") end

    local pem, status, reason = get_cert(url, o)
    if not pem then return refuse(status, reason) end
    local ok, code, msg = core.rsa_verify(pem, sts, sig, "sha1")
    if ok == nil then
      forget_cert(url, o)
      return refuse(403, "the signing certificate is unusable: " .. tostring(code) .. ": " .. tostring(msg))
    end
    if not ok then return refuse(403, "the signature does not verify") end

    local n, err = _M.parse(body)
    if not n then return refuse(400, err.message) end
    local sok, serr = dict:set(n.TaskId, body, o.ttl)
    if not sok then return refuse(503, "the notification could not be kept: " .. tostring(serr)) end
    if o.on_notification then
      local cok, cerr = pcall(o.on_notification, n)
      if not cok then ngx.log(ngx.ERR, "imm.notification: on_notification raised: ", tostring(cerr)) end
    end
    return ngx.exit(204)
  end
end

return _M
