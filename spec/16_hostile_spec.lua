-- Layer 16: a hostile server (issue #14). spec/helpers/hostile.py answers
-- with scripted bytes: looping tokens, bodies that are not pages, 429s
-- without an IMM body, replies cut short, stalled or trickled, lines too
-- long to hold. Every case runs on the libcurl path and inside nginx (the
-- ngx transport), and must end in a documented error code, on time.
local cjson = require "cjson"
local core = require "imm.core"
local imm = require "imm"
local fixture = require "helpers.fixture"
local nginx = require "helpers.nginx"
local hostile = require "helpers.hostile"

local page = hostile.page
local LUA = arg[-1] or "lua"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- A reply head with these extra header lines, and a body.
local function head(status, extra, body)
  return "HTTP/1.1 " .. status .. " X\r\nContent-Type: application/json\r\n" .. (extra or "")
    .. "\r\n" .. (body or "")
end

describe("a hostile server", function()
  local plain, tls, ngx_srv
  setup(function()
    plain = hostile.start()
    tls = hostile.start { tls = true }
    ngx_srv = nginx.run { trusted = fixture.certs() .. "/ca.crt",
      locations = "location = /run { content_by_lua_block { require('hostile_handler').run() } }" }
  end)
  teardown(function()
    if ngx_srv then ngx_srv.stop() end
    if plain then plain.stop() end
    if tls then tls.stop() end
  end)

  -- Runs scenario `a` on transport `tr` against `srv` (default: plain).
  local function run(tr, a, srv)
    srv = srv or plain
    a.port, a.tls, a.transport = srv.port, srv.tls or nil, tr
    if tr == "curl" then
      a.ca_file = srv.tls and (fixture.certs() .. "/ca.crt") or nil
      return hostile.run(a)
    end
    local status, body = ngx_srv.raw("/run?a=" .. core.percent_encode(cjson.encode(a)))
    assert(status == 200, "nginx /run -> " .. tostring(status) .. " " .. tostring(body)
      .. "\n" .. ngx_srv.error_log():sub(-2000))
    return cjson.decode(body)
  end

  local function code(r) return r.err and r.err.code end

  for _, tr in ipairs { "curl", "ngx" } do
    describe("on the " .. tr .. " transport", function()
      describe("a repeated NextToken", function()
        -- the script ends with a last page, so a pager that loops ends too,
        -- with a count that gives it away instead of hanging the spec
        local same = { page(2, "A"), page(2, "A"), page(2, "A"), page(2, "A"), page(2, nil) }
        local cycle = { page(1, "A"), page(1, "B"), page(1, "A"), page(1, "B"), page(1, nil) }
        for _, mode in ipairs { "items", "pages", "all" } do
          it("ends " .. mode .. " with InvalidResponse (the same token again)", function()
            plain.script(same)
            local r = run(tr, { mode = mode })
            assert.equal("InvalidResponse", code(r), cjson.encode(r))
            assert.is_false(r.err.retryable)
            assert.truthy(r.err.message:find("NextToken", 1, true))
            assert.equal(2, #plain.log())
            assert.is_true(r.items_ok)
          end)
          it("ends " .. mode .. " with InvalidResponse (a cycle A -> B -> A)", function()
            plain.script(cycle)
            local r = run(tr, { mode = mode })
            assert.equal("InvalidResponse", code(r), cjson.encode(r))
            assert.equal(3, #plain.log())
            local log = plain.log()
            assert.equal("A", log[2].params.NextToken)
            assert.equal("B", log[3].params.NextToken)
          end)
        end
      end)

      describe("a repeated NextToken in a parallel listing or with prefetch", function()
        local datasets = { status = 200, body = '{"RequestId":"r","Datasets":[{"DatasetName":"d1"}]}' }
        for _, mode in ipairs { "items", "all" } do
          it("ends " .. mode .. " with concurrency = 4 with InvalidResponse, naming the dataset", function()
            plain.script { datasets, page(1, "A"), page(1, "A"), page(1, "A"), page(1, nil) }
            local r = run(tr, { mode = mode, pager = { concurrency = 4 } })
            assert.equal("InvalidResponse", code(r), cjson.encode(r))
            assert.equal("d1", r.err.dataset)
            assert.equal(3, #plain.log())
            assert.is_true(r.items_ok)
          end)
        end
        -- issue 20: a dataset that ListDatasets names twice is listed once.
        -- The body after the first reply serves as both a ListDatasets and a
        -- ListBindings page, so the order the requests arrive in does not matter.
        local both = { status = 200, body = '{"RequestId":"r","Datasets":[{"DatasetName":"d1"}],'
          .. '"Bindings":[{"URI":"oss://b/1","State":"Ready"}]}' }
        for _, mode in ipairs { "items", "all" } do
          it("lists a dataset named twice on one ListDatasets page once (" .. mode .. ")", function()
            plain.script { { status = 200, body = '{"RequestId":"r","Datasets":[{"DatasetName":"d1"},'
              .. '{"DatasetName":"d1"}]}' }, both }
            local r = run(tr, { mode = mode, pager = { concurrency = 4 } })
            assert.is_nil(r.err, cjson.encode(r))
            assert.equal(1, r.count)
            assert.equal(2, #plain.log())
          end)
          it("lists a dataset named on two ListDatasets pages once (" .. mode .. ")", function()
            plain.script { { status = 200, body = '{"RequestId":"r","Datasets":[{"DatasetName":"d1"}],'
              .. '"NextToken":"D2"}' }, both }
            local r = run(tr, { mode = mode, pager = { concurrency = 4 } })
            assert.is_nil(r.err, cjson.encode(r))
            assert.equal(1, r.count)
            assert.equal(3, #plain.log())
          end)
        end
        -- issue 20: a resume state (ListDatasets from token D2, d1 finished)
        -- whose next ListDatasets page names d1 again: only d2 is listed
        for _, mode in ipairs { "items", "all" } do
          it("resumes without listing again a finished dataset a later page names (" .. mode .. ")", function()
            plain.script { { status = 200, body = '{"RequestId":"r","Datasets":[{"DatasetName":"d1"},'
              .. '{"DatasetName":"d2"}]}' }, page(1, nil) }
            local r = run(tr, { mode = mode, pager = { concurrency = 4, resume = "imm-resume-1!p!D2!d1!" } })
            assert.is_nil(r.err, cjson.encode(r))
            assert.equal(1, r.count)
            local log = plain.log()
            assert.equal(2, #log)
            assert.equal("D2", log[1].params.NextToken)
            assert.equal("d2", log[2].params.DatasetName)
          end)
        end
        it("ends a prefetching listing with InvalidResponse", function()
          plain.script { page(1, "A"), page(1, "B"), page(1, "A"), page(1, "B"), page(1, nil) }
          local r = run(tr, { mode = "items", pager = { prefetch = true } })
          assert.equal("InvalidResponse", code(r), cjson.encode(r))
          assert.truthy(r.err.message:find("NextToken", 1, true))
          assert.equal(2, r.count)
        end)
      end)

      describe("a body that is not a page", function()
        it("takes [] for InvalidResponse, not an empty last page", function()
          for _, mode in ipairs { "page", "all" } do
            plain.script { { status = 200, body = "[]" } }
            local r = run(tr, { mode = mode })
            assert.equal("InvalidResponse", code(r), mode .. ": " .. cjson.encode(r))
            assert.is_false(r.err.retryable)
          end
        end)

        it("refuses bytes after a NUL", function()
          plain.script { { status = 200, body = '{"RequestId":"r","Bindings":[]}\0,"NextToken":"X"}' } }
          local r = run(tr, { mode = "all" })
          assert.equal("InvalidResponse", code(r), cjson.encode(r))
        end)

        it("reports a numeric NextToken as InvalidResponse, not InvalidParameter", function()
          for _, mode in ipairs { "page", "items" } do
            plain.script { page(1, 12345), page(1, nil) }
            local r = run(tr, { mode = mode })
            assert.equal("InvalidResponse", code(r), mode .. ": " .. cjson.encode(r))
            assert.equal(1, #plain.log())
          end
        end)

        it("refuses Bindings elements that are not objects", function()
          for _, el in ipairs { "false", "null", "7", '"x"', "[1]" } do
            for _, mode in ipairs { "page", "items" } do
              plain.script { { status = 200, body = '{"RequestId":"r","Bindings":[{"URI":"oss://a"},' .. el .. "]}" } }
              local r = run(tr, { mode = mode })
              assert.equal("InvalidResponse", code(r), el .. " " .. mode .. ": " .. cjson.encode(r))
              assert.is_true(r.items_ok, "the pager yielded something other than an item or false, err")
            end
          end
        end)
      end)

      describe("a 429", function()
        local bodies = {
          html = { "text/html", "<html><body>Too Many Requests</body></html>" },
          empty = { "text/plain", "" },
          ["another code"] = { "application/json", '{"Code":"QuotaExceeded.Busy","Message":"slow down"}' },
        }
        for name, b in pairs(bodies) do
          it("is throttling whatever its body says (" .. name .. "), and retried after Retry-After", function()
            plain.script {
              { status = 429, headers = { ["Content-Type"] = b[1], ["Retry-After"] = "1" }, body = b[2] },
              page(1, nil) }
            local r = run(tr, { mode = "page", max_retries = 2 })
            assert.is_nil(r.err, cjson.encode(r))
            assert.equal(2, #plain.log())
            assert.is_true(r.elapsed >= 0.9, "retried after " .. r.elapsed .. " s, not after Retry-After")
          end)
        end

        it("is retryable, and retried even for an action that changes something", function()
          plain.script { { status = 429, headers = { ["Content-Type"] = "text/html", ["Retry-After"] = "0" },
            body = "<html>busy</html>" } }
          local r = run(tr, { mode = "page" })
          assert.is_true(r.err.retryable, cjson.encode(r))
          assert.equal(429, r.err.status)
          assert.truthy(r.err.code:find("^Throttling"), r.err.code)
          plain.script { { status = 429, headers = { ["Retry-After"] = "0" }, body = "" },
            { status = 200, body = '{"RequestId":"r","Binding":{"URI":"oss://bkt/"}}' } }
          r = run(tr, { mode = "call", action = "CreateBinding", max_retries = 1,
            params = { ProjectName = "p", DatasetName = "d", URI = "oss://bkt/" } })
          assert.is_nil(r.err, cjson.encode(r))
          assert.equal(2, #plain.log())
        end)
      end)

      describe("a reply cut short", function()
        local cut = head(200, "Content-Length: 100\r\n", '{"RequestId":"r","Bin')
        for _, how in ipairs { "fin", "rst" } do
          it("is lost and retried for a read (" .. how .. " mid-body)", function()
            plain.script { { raw = { cut }, ["end"] = how }, page(1, nil) }
            local r = run(tr, { mode = "page", max_retries = 1 })
            assert.is_nil(r.err, cjson.encode(r))
            assert.equal(1, r.count)
            assert.equal(2, #plain.log())
            plain.script { { raw = { cut }, ["end"] = how } }
            r = run(tr, { mode = "page" })
            assert.equal("ConnectionFailed", code(r), cjson.encode(r))
            assert.is_true(r.err.retryable)
          end)
        end
      end)

      describe("bytes that are no HTTP reply", function()
        it("on a reused connection: the connection was stale, the read is retried on a new one", function()
          -- the second request goes out on the kept-alive connection of the
          -- first, where the server answers with leftover bytes
          local last = page(1, nil)
          last["end"] = "fin"  -- so the next case starts on a new connection
          plain.script { page(1, "t2"), { raw = { "XYZ leftover bytes\r\n\r\n" }, ["end"] = "fin" }, last }
          local r = run(tr, { mode = "pages", max_retries = 1 })
          assert.is_nil(r.err, cjson.encode(r))
          assert.equal(2, r.count)
          assert.equal(3, #plain.log())
        end)
        it("on a new connection: InvalidResponse, not retried", function()
          plain.script { { raw = { "XYZ leftover bytes\r\n\r\n" }, ["end"] = "fin" }, page(1, nil) }
          local r = run(tr, { mode = "page", max_retries = 1 })
          assert.equal("InvalidResponse", code(r), cjson.encode(r))
          assert.equal(1, #plain.log())
        end)
      end)

      describe("time", function()
        it("holds a call to its deadline against a stalled server (deadline 1, timeout 10)", function()
          plain.script { { ["end"] = "stall" } }
          local r = run(tr, { mode = "page", deadline = 1, timeout = 10, max_retries = 3 })
          assert.equal("Timeout", code(r), cjson.encode(r))
          assert.is_true(r.elapsed < 2, "returned after " .. r.elapsed .. " s")
        end)

        it("caps the last attempt at what is left of the deadline (deadline 3, timeout 2)", function()
          plain.script { { ["end"] = "stall" } }
          local r = run(tr, { mode = "page", deadline = 3, timeout = 2, max_retries = 3 })
          assert.equal("Timeout", code(r), cjson.encode(r))
          assert.is_true(r.elapsed >= 1.9 and r.elapsed < 4, "returned after " .. r.elapsed .. " s")
          assert.equal(2, #plain.log())
        end)

        it("holds a reply trickled at 2 bytes/s to the timeout", function()
          local p = page(1, nil)
          plain.script { { raw = { head(200, "Content-Length: " .. #p.body .. "\r\n", p.body) }, trickle = 0.5 } }
          local r = run(tr, { mode = "page", timeout = 2 })
          assert.equal("Timeout", code(r), cjson.encode(r))
          assert.is_true(r.elapsed < 3, "returned after " .. r.elapsed .. " s")
        end)

        it("holds a header trickled without a newline to the timeout", function()
          plain.script { { raw = { "HTTP/1.1 200 OK\r\nX-Slow: ", { fill = "a", count = 400 } }, trickle = 0.05 } }
          local r = run(tr, { mode = "page", timeout = 2 })
          assert.equal("Timeout", code(r), cjson.encode(r))
          assert.is_true(r.elapsed < 3, "returned after " .. r.elapsed .. " s")
        end)

        it("holds a TLS call to its deadline", function()
          tls.script { { ["end"] = "stall" } }
          local r = run(tr, { mode = "page", deadline = 1, timeout = 10, max_retries = 3 }, tls)
          assert.equal("Timeout", code(r), cjson.encode(r))
          assert.is_true(r.elapsed < 2, "returned after " .. r.elapsed .. " s")
        end)
      end)

      describe("lines too long to hold", function()
        local cases = {
          ["a 2 MB status line"] = { "HTTP/1.1 200 ", { fill = "a", count = 2000000 }, "\r\n\r\n{}" },
          ["a 2 MB header line"] = { "HTTP/1.1 200 OK\r\nX-Big: ", { fill = "a", count = 2000000 }, "\r\n\r\n{}" },
          ["400 KB of header lines"] = { "HTTP/1.1 200 OK\r\n", { fill = "X-Many: " .. ("m"):rep(990) .. "\r\n",
            count = 400 }, "Content-Length: 2\r\n\r\n{}" },
          ["a 1 MB chunk-size line"] = { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            { fill = "0", count = 1000000 }, "2\r\n{}\r\n0\r\n\r\n" },
        }
        for name, raw in pairs(cases) do
          it("refuses " .. name .. " with InvalidResponse, not retried", function()
            plain.script { { raw = raw, ["end"] = "fin" } }
            local r = run(tr, { mode = "page", max_retries = 2, timeout = 5 })
            assert.equal("InvalidResponse", code(r), cjson.encode(r))
            assert.is_false(r.err.retryable)
            assert.equal(1, #plain.log())
            assert.is_true(r.elapsed < 5, "returned after " .. r.elapsed .. " s")
          end)
        end
      end)

      describe("secrets", function()
        local TOKEN = "STS.tok-echo-6174839201"
        it("scrubs a token or secret echoed in any string field of an error", function()
          for _, echo in ipairs { TOKEN, hostile.SECRET } do
            plain.script { { status = 400, headers = { ["x-acs-request-id"] = echo },
              body = cjson.encode { Code = "Bad" .. echo, Message = "got " .. echo, RequestId = echo,
                HostId = echo, Recommend = "https://x/?t=" .. echo, Extra = echo } } }
            local r = run(tr, { mode = "page", security_token = TOKEN })
            assert.is_table(r.err)
            assert.is_false(fixture.deep_find(r.err, echo), cjson.encode(r.err))
            assert.is_false(fixture.deep_find(r.err, core.percent_encode(echo)), cjson.encode(r.err))
          end
        end)

        it("masks a security token with surrounding whitespace in the debug trace", function()
          plain.script { page(1, nil) }
          local r = run(tr, { mode = "page", security_token = "  STS.tok-pad-5550123  ", debug = true })
          assert.is_nil(r.err, cjson.encode(r))
          assert.is_true(#r.trace > 0)
          assert.is_false(fixture.deep_find(r.trace, "STS.tok-pad-5550123"), table.concat(r.trace, "\n"))
        end)
      end)

      it("refuses calls on a closed client with InvalidState", function()
        plain.script { page(1, nil) }
        local r = run(tr, { mode = "closed" })
        assert.equal("InvalidState", code(r), cjson.encode(r))
        assert.equal(0, #plain.log())
      end)

      -- issue 20: a listing on a closed client sends nothing either
      for _, pager in ipairs { { concurrency = 4 }, { prefetch = true } } do
        it("refuses a listing on a closed client with InvalidState, sending nothing ("
            .. cjson.encode(pager) .. ")", function()
          plain.script { { status = 200, body = '{"RequestId":"r","Datasets":[{"DatasetName":"d1"}]}' }, page(1, nil) }
          local r = run(tr, { mode = "closed", pager = pager })
          assert.equal("InvalidState", code(r), cjson.encode(r))
          assert.is_false(r.ok)
          assert.equal("InvalidState", r.all_err and r.all_err.code, cjson.encode(r))
          assert.is_false(r.all_ok)
          assert.equal(0, #plain.log())
        end)
      end

      -- issue 20: the server drops a kept-alive connection after reading a
      -- request; whatever goes out again must carry a new signature (the
      -- service refuses a nonce it has seen with SignatureNonceUsed)
      it("signs afresh a read re-sent after a reused connection died before the reply", function()
        local last = page(1, nil)
        last["end"] = "fin"  -- so the next case starts on a new connection
        plain.script { page(1, nil), { ["end"] = "fin" }, last }
        local r = run(tr, { mode = "twice", max_retries = 2 })
        assert.is_nil(r.err, cjson.encode(r))
        assert.is_true(r.ok)
        local log, nonces = plain.log(), {}
        assert.equal(3, #log)
        for i, rec in ipairs(log) do
          local n = rec.headers["x-acs-signature-nonce"]
          assert.is_string(n)
          assert.is_nil(nonces[n], "request " .. i .. " went out with the nonce of request " .. tostring(nonces[n]))
          nonces[n] = i
        end
      end)
    end)
  end

  describe("the command line", function()
    local function imm_cli(args, env)
      local errfile = os.tmpname()
      -- `timeout`: a CLI that loops fails the spec instead of hanging it
      local ok = os.execute("env -u IMM_DEBUG -u ALIBABA_CLOUD_SECURITY_TOKEN IMM_ENDPOINT=" .. plain.url
        .. " ALIBABA_CLOUD_ACCESS_KEY_ID=" .. hostile.KEY_ID .. " ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. hostile.SECRET
        .. " " .. (env or "") .. " timeout 30 " .. LUA .. " bin/imm " .. args .. " >/dev/null 2>" .. q(errfile))
      local err = fixture.read(errfile) or ""
      os.remove(errfile)
      return ok == true or ok == 0, err
    end

    it("ends --all on a repeated NextToken with InvalidResponse", function()
      plain.script { page(2, "A"), page(2, "B"), page(2, "A"), page(2, "B"), page(2, nil) }
      local ok, err = imm_cli("list-bindings --project p --all")
      assert.is_false(ok)
      assert.truthy(err:find("InvalidResponse", 1, true), err)
      assert.equal(3, #plain.log())
    end)

    it("keeps an echoed token off stderr", function()
      local token = "STS.tok-cli-8675309"
      plain.script { { status = 403, body = cjson.encode { Code = token, Message = token, RequestId = token,
        HostId = token, Recommend = token } } }
      local ok, err = imm_cli("list-bindings --project p", "ALIBABA_CLOUD_SECURITY_TOKEN=" .. token)
      assert.is_false(ok)
      assert.truthy(err:find("HTTP 403", 1, true), err)
      assert.is_nil(err:find(token, 1, true), err)
    end)
  end)

  describe("a function transport", function()
    local function client(fn)
      return assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = hostile.KEY_ID,
        access_key_secret = hostile.SECRET, transport = fn, max_retries = 1 })
    end

    it("may fail with a string: the client wraps it as ConnectionFailed", function()
      local calls = 0
      local c = client(function() calls = calls + 1 return nil, "boom" end)
      local res, err = c:list_bindings { ProjectName = "p" }
      assert.is_nil(res)
      assert.is_true(require("imm.errors").is_error(err))
      assert.equal("ConnectionFailed", err.code)
      assert.truthy(tostring(err):find("boom", 1, true))
      assert.equal(2, calls)  -- a read: retried like any connection failure
    end)

    it("may fail with nothing at all", function()
      local c = client(function() return nil end)
      local res, err = c:call("CreateBinding", { ProjectName = "p", DatasetName = "d", URI = "oss://bkt/" })
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.equal(1, err.attempts)  -- a mutation: the request may have gone out
    end)
  end)

  it("refuses an async call on a closed client with InvalidState, as in blocking mode", function()
    plain.script { page(1, nil) }
    local c = assert(imm.new { endpoint = plain.url, access_key_id = hostile.KEY_ID,
      access_key_secret = hostile.SECRET, async = true, max_retries = 0 })
    c:close()
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "p" } end)
    local ok, res, err = task:join()
    assert.is_true(ok)
    assert.is_nil(res)
    assert.equal("InvalidState", err.code)
    assert.equal(0, #plain.log())
  end)
end)
