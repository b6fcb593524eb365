-- Playing MNS for the push receiver specs (19, 18, and the end-to-end ones):
-- a signing key and its certificate made for the run, served over HTTPS by
-- the spec's nginx (server_block), pushes signed as MNS documents it, and a
-- GET left running in the background while the spec pushes.
local fixture = require "helpers.fixture"

local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
--- Base64 (padded), in Lua, so the spec does not lean on what it tests.
function M.b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    for j = 1, 4 do out[#out + 1] = B64:sub(q[j] + 1, q[j] + 1) end
    if not c then out[#out] = "=" end
    if not b then out[#out - 1] = "=" end
  end
  return table.concat(out)
end

function M.free_port()
  local p = io.popen("env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); "
    .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  local port = tonumber(p:read("*l"))
  p:close()
  return port
end

function M.http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", t or os.time()) end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local MNS = {}
MNS.__index = MNS

--- MNS for one spec, in `dir`: mns.key and its certificate at
-- www/mns/x509_public_certificate.pem, other.key (a key MNS does not hold).
-- The certificate's port is picked now: start servers that bind a port of
-- the kernel's choice first, or one could take it before nginx does.
-- `certs` is fixture.certs()'s directory (the TLS server's certificate).
function M.new(dir, certs)
  assert(fixture.sh("cd " .. dir .. " && mkdir -p www/mns && openssl req -x509 -newkey rsa:2048 -nodes"
    .. " -keyout mns.key -out www/mns/x509_public_certificate.pem -days 2 -subj /CN=mns-test >/dev/null 2>&1"
    .. " && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key >/dev/null 2>&1"))
  local port = M.free_port()
  return setmetatable({ dir = dir, certs = certs, cert_port = port, cert_host = "127.0.0.1:" .. port,
    cert_url = "https://127.0.0.1:" .. port .. "/mns/x509_public_certificate.pem" }, MNS)
end

--- nginx's server block that serves www/ over HTTPS on the certificate's port.
function MNS:server_block()
  return "server { listen 127.0.0.1:" .. self.cert_port .. " ssl; ssl_certificate " .. self.certs
    .. "/server.crt; ssl_certificate_key " .. self.certs .. "/server.key; location / { root " .. self.dir
    .. "/www; } }"
end

--- The signing key, in PEM.
function MNS:key_pem(name) return fixture.read(self.dir .. "/" .. (name or "mns") .. ".key") end

function MNS:md5_hex(s)
  write(self.dir .. "/md5-in", s)
  local p = io.popen("openssl dgst -md5 -r " .. self.dir .. "/md5-in")
  local hex = p:read("*l"):match("^(%x+)")
  p:close()
  return hex
end

function MNS:sign(s, key)
  write(self.dir .. "/sts", s)
  assert(fixture.sh("openssl dgst -sha1 -sign " .. self.dir .. "/" .. (key or "mns") .. ".key -out "
    .. self.dir .. "/sig " .. self.dir .. "/sts"))
  return fixture.read(self.dir .. "/sig")
end

--- POSTs body to base .. path as MNS does, with `http` (an imm.core.http).
-- o: url (the certificate URL), key (the signing key's name), date, md5 (a
-- Content-MD5 to send instead), tamper (a body sent instead of the signed
-- one), drop (a header left out), sign (false: an Authorization of garbage).
-- Returns the status and the body of the answer.
function MNS:push(http, base, path, body, o)
  o = o or {}
  local h = {
    ["content-md5"] = o.md5 or M.b64(self:md5_hex(body)),
    ["content-type"] = "text/xml;charset=utf-8",
    date = o.date or M.http_date(),
    ["x-mns-request-id"] = "57458276F0E3D56D7C000" .. math.random(100, 999),
    ["x-mns-signing-cert-url"] = M.b64(o.url or self.cert_url),
    ["x-mns-version"] = "2015-06-06",
  }
  local names = {}
  for k in pairs(h) do if k:sub(1, 6) == "x-mns-" then names[#names + 1] = k end end
  table.sort(names)
  local sts = "POST\n" .. h["content-md5"] .. "\n" .. h["content-type"] .. "\n" .. h.date .. "\n"
  for _, k in ipairs(names) do sts = sts .. k .. ":" .. h[k] .. "\n" end
  sts = sts .. path
  h.authorization = o.sign == false and M.b64(("x"):rep(256)) or M.b64(self:sign(sts, o.key))
  if o.drop then h[o.drop] = nil end
  local lines = {}
  for k, v in pairs(h) do lines[#lines + 1] = k .. ": " .. v end
  local status, resp = http:request("POST", base .. path, lines, o.tamper or body)
  assert(status, resp)
  return status, resp
end

--- GETs url with curl in the background, so the spec can push meanwhile.
-- Returns wait(), which returns the body and the HTTP status once there (nil
-- after about `seconds`, 20 by default).
function M.background_get(url, out)
  os.remove(out)
  os.remove(out .. ".code")
  assert(fixture.sh("curl -s -o " .. out .. " -w '%{http_code}' '" .. url .. "' >" .. out .. ".code.tmp"
    .. " && mv " .. out .. ".code.tmp " .. out .. ".code &"))
  return function(seconds)
    for _ = 1, (seconds or 20) * 20 do
      local code = fixture.read(out .. ".code")
      if code and code ~= "" then return fixture.read(out), tonumber(code) end
      require("imm.core").sleep(0.05)
    end
    return nil
  end
end

return M
