-- Layer 5: the coroutine pagers against the local IMM server, with data
-- sets sized to land on page boundaries.
local fixture = require "helpers.fixture"

describe("pagers", function()
  local srv, c
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function()
    srv.reset()
    c = srv.client {}
  end)

  local function load(n)
    local list = fixture.bindings("p", n)
    srv.data { Projects = { "p", "empty" }, Bindings = list }
    return list
  end

  local function collect(it)
    local out, errs = {}, {}
    for b, err in it do
      if b then out[#out + 1] = b else errs[#errs + 1] = err end
    end
    return out, errs
  end

  local function same_uris(want, got)
    assert.equal(#want, #got)
    for i = 1, #want do assert.equal(want[i].URI, got[i].URI) end
  end

  for _, case in ipairs {
    { n = 0, size = 10, pages = 1 },     -- empty project: one empty page
    { n = 10, size = 10, pages = 1 },    -- ends exactly at a page boundary
    { n = 11, size = 10, pages = 2 },
    { n = 30, size = 10, pages = 3 },
    { n = 250, size = nil, pages = 2 },  -- default page size: ListBindings documents 200 at most
    { n = 400, size = nil, pages = 2 },
  } do
    it(string.format("walks %d bindings in pages of %s", case.n, tostring(case.size or "default")), function()
      local want = load(case.n)
      local got, errs = collect(c:bindings({ ProjectName = "p" }, { page_size = case.size }))
      assert.same({}, errs)
      same_uris(want, got)
      assert.equal(case.pages, #srv.log(), "one request per page, no extra request at the end")
      local pages = 0
      for page, err in c:pages("ListBindings", { ProjectName = "p", MaxResults = case.size }) do
        assert.is_nil(err)
        pages = pages + 1
        assert.equal(pages < case.pages, page.NextToken ~= nil)
      end
      assert.equal(case.pages, pages)
    end)
  end

  it("lists an empty project", function()
    load(5)
    local got, errs = collect(c:bindings { ProjectName = "empty" })
    assert.same({}, got)
    assert.same({}, errs)
    assert.same({}, assert(c:all_bindings { ProjectName = "empty" }).Bindings)
  end)

  it("merges every page with all_bindings", function()
    local want = load(23)
    local all = assert(c:all_bindings({ ProjectName = "p" }, { page_size = 5 }))
    same_uris(want, all.Bindings)
    assert.equal(5, #srv.log())
  end)

  it("all_bindings that fails mid-way gives back what it had (err.partial) and where to go on", function()
    local want = load(23)
    local second = assert(c:list_bindings { ProjectName = "p", MaxResults = 5 }).NextToken
    local third = assert(c:list_bindings { ProjectName = "p", MaxResults = 5, NextToken = second }).NextToken
    srv.reset()
    srv.data { Projects = { "p" }, Bindings = want }
    srv.fault { mode = "internal", count = -1, match = { NextToken = third } }
    local all, err = c:all_bindings({ ProjectName = "p" }, { page_size = 5, max_retries = 0 })
    assert.is_nil(all)
    assert.equal("InternalError", err.code)
    assert.equal(10, #err.partial.Bindings)
    assert.equal(third, err.next_token)
    srv.control("DELETE", "faults")
    local rest = assert(c:all_bindings({ ProjectName = "p" }, { page_size = 5, start_token = err.next_token }))
    local got = err.partial.Bindings
    for _, b in ipairs(rest.Bindings) do got[#got + 1] = b end
    same_uris(want, got)
  end)

  it("stops after max_items and asks only for what it needs", function()
    local want = load(30)
    local got = collect(c:bindings({ ProjectName = "p" }, { page_size = 10, max_items = 15 }))
    same_uris({ (table.unpack or unpack)(want, 1, 15) }, got)
    local log = srv.log()
    assert.equal(2, #log)
    assert.equal("10", log[1].params.MaxResults)
    assert.equal("5", log[2].params.MaxResults)
  end)

  it("resumes from a saved token with start_token", function()
    local want = load(25)
    local first = assert(c:list_bindings { ProjectName = "p", MaxResults = 10 })
    local rest = collect(c:bindings({ ProjectName = "p" }, { start_token = first.NextToken, page_size = 10 }))
    same_uris({ (table.unpack or unpack)(want, 11, 25) }, rest)
  end)

  it("filters by DatasetName while paging", function()
    local list = fixture.bindings("p", 6, "a")
    for _, b in ipairs(fixture.bindings("p", 4, "b")) do list[#list + 1] = b end
    srv.data { Projects = { "p" }, Bindings = list }
    local got = collect(c:bindings({ ProjectName = "p", DatasetName = "b" }, { page_size = 3 }))
    assert.equal(4, #got)
    for _, b in ipairs(got) do assert.equal("b", b.DatasetName) end
  end)

  it("yields false, err once on a failure mid-listing, with the token to resume", function()
    load(30)
    local it = c:bindings({ ProjectName = "p" }, { page_size = 10 })
    local got = {}
    for _ = 1, 10 do got[#got + 1] = assert(it()) end
    srv.fault { mode = "throttle", count = -1 }
    local c0 = srv.client { max_retries = 0 }
    local it2 = c0:bindings({ ProjectName = "p" }, { page_size = 10, start_token = "p:ds:oss://bucket-0010" })
    local b, err = it2()
    assert.is_false(b)
    assert.equal("Throttling.User", err.code)
    assert.equal("p:ds:oss://bucket-0010", err.next_token)
    assert.is_nil(it2())
    assert.is_nil(it2(), "the iterator stays finished")
    srv.control("DELETE", "faults")
    local rest = collect(c:bindings({ ProjectName = "p" }, { page_size = 10, start_token = err.next_token }))
    assert.equal(20, #rest)
    assert.equal("oss://bucket-0011", rest[1].URI)
  end)

  it("reports bad parameters and options through the iterator, sending nothing", function()
    for _, args in ipairs {
      { { ProjectName = 1 } },
      { { ProjectName = "p" }, { max_item = 3 } },
      { { ProjectName = "p" }, { page_size = 0 } },
      { { ProjectName = "p" }, { start_token = "" } },
    } do
      local got, errs = collect(c:bindings(args[1], args[2]))
      assert.same({}, got)
      assert.equal(1, #errs)
      assert.equal("InvalidParameter", errs[1].code)
    end
    local _, err = c:all_bindings({ ProjectName = "p" }, { bogus = true })
    assert.equal("InvalidParameter", err.code)
    assert.equal(0, #srv.log())
  end)

  -- The lua5.4 interpreter runs the generational collector. A finished page
  -- must die young there: if the pager kept it where a write barrier ages
  -- it (an upvalue), every page would wait for a major collection, which
  -- cost the item pager a third of its speed in bench/.
  if _VERSION == "Lua 5.4" then
    it("lets finished pages die young under Lua 5.4's generational collector", function()
      load(60)
      local mode = collectgarbage("generational")
      -- only the young collections below run, so the test does not hang on
      -- when the allocator happens to trigger one
      collectgarbage("stop")
      finally(function()
        collectgarbage("restart")
        collectgarbage(mode)
      end)
      local fourth_page = setmetatable({}, { __mode = "k" })
      local left, k = -1, 0
      for b, err in c:bindings({ ProjectName = "p" }, { page_size = 10 }) do
        assert.is_nil(err)
        k = k + 1
        -- a young collection as each page starts, so the pager's own
        -- objects have grown old by the fourth page, as in a long listing
        if k % 10 == 1 then collectgarbage("step", 0) end
        if k > 30 and k <= 40 then fourth_page[b] = true end
        if k == 51 then
          -- two young collections since page 4 was let go
          left = 0
          for _ in pairs(fourth_page) do left = left + 1 end
        end
      end
      assert.equal(60, k)
      assert.equal(0, left, "bindings of the fourth page outlived two young collections")
    end)
  end

  it("runs the next listing on the coroutine of one that ended, never on one still in use", function()
    load(12)
    -- a fresh copy of the pager module, made while coroutine.create counts
    local create, made = coroutine.create, 0
    local saved = package.loaded["imm.pager"]
    package.loaded["imm.pager"] = nil
    coroutine.create = function(f) made = made + 1; return create(f) end  -- luacheck: ignore 122
    local ok, pager = pcall(require, "imm.pager")
    coroutine.create = create  -- luacheck: ignore 122
    package.loaded["imm.pager"] = saved
    assert(ok, pager)
    local function count(it)
      local n, errs = 0, 0
      for b in it do
        if b then n = n + 1 else errs = errs + 1 end
      end
      return n, errs
    end
    local params = { ProjectName = "p" }
    for _ = 1, 3 do assert.equal(12, count(pager.items(c, "ListBindings", params, { page_size = 5 }))) end
    assert.equal(1, made, "three listings one after another share one coroutine")
    -- one left half-way keeps its coroutine; the next listing needs another
    local half = pager.items(c, "ListBindings", params, { page_size = 5 })
    assert.is_table(half())
    assert.equal(3, count(pager.pages(c, "ListBindings", params, { page_size = 5 })))
    assert.equal(2, made)
    -- and the half-done one still goes on where it was
    assert.equal(11, count(half))
    -- a listing that fails ends too, and gives its coroutine back
    local n, errs = count(pager.items(c, "ListBindings", { ProjectName = "nope" }))
    assert.same({ 0, 1 }, { n, errs })
    assert.equal(12, count(pager.items(c, "ListBindings", params)))
    assert.equal(2, made)
  end)

  it("raises a bug inside the listing (here, the caller's decoder) once, then ends", function()
    load(12)
    local decode, calls = require("imm.decode").imm, 0
    local buggy = srv.client { decoder = function(body)
      calls = calls + 1
      if calls == 2 then error("decoder bug") end
      return decode(body)
    end }
    for _, mode in ipairs { "items", "pages" } do
      calls = 0
      local it = mode == "items" and buggy:bindings({ ProjectName = "p" }, { page_size = 5 })
        or buggy:pages("ListBindings", { ProjectName = "p", MaxResults = 5 })
      local first = mode == "items" and 5 or 1
      for _ = 1, first do assert.is_table(it()) end
      assert.has_error(function() it() end, "decoder bug")
      assert.is_nil(it())
      assert.is_nil(it())
    end
    -- the dead coroutine was not parked: the next listing runs
    local n = 0
    for b in c:bindings({ ProjectName = "p" }, { page_size = 5 }) do
      assert.is_table(b)
      n = n + 1
    end
    assert.equal(12, n)
  end)

  it("runs inside the caller's own coroutines", function()
    load(12)
    local co = coroutine.wrap(function()
      local n = 0
      for b in c:bindings({ ProjectName = "p" }, { page_size = 5 }) do
        n = n + 1
        coroutine.yield(b.URI)
      end
      return "done", n
    end)
    local uris = {}
    while true do
      local a, n = co()
      if a == "done" then assert.equal(12, n) break end
      uris[#uris + 1] = a
    end
    assert.equal(12, #uris)
  end)
end)
