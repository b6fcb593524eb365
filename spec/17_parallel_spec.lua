-- Layer 17: parallel listings (issue 16) against the local IMM server: a
-- project's bindings over N requests at once, in plain Lua (blocking
-- client, the chains on one curl multi), inside imm tasks, and inside nginx
-- (spec/06 style); the prefetching pager; the connection settings that
-- make it fast.
local fixture = require "helpers.fixture"
local imm = require "imm"
local core = require "imm.core"

local DATASETS, PER = 20, 37   -- 740 bindings; pages of 10 give 4 per dataset

-- n bindings in each of d datasets named ds-01.., in the server's order.
local function data(d, per)
  local all = {}
  for i = 1, d do
    local name = string.format("ds-%02d", i)
    for _, b in ipairs(fixture.bindings("immtest", per, name)) do all[#all + 1] = b end
  end
  return { Projects = { "immtest" }, Bindings = all }
end

-- PUC Lua 5.1 cannot yield from a for-in loop's iterator: in tasks the
-- listings call the iterator directly.
local function drain(it)
  local got = {}
  while true do
    local b, err = it()
    if b == nil then return got end
    if not b then return got, err end
    got[#got + 1] = b
  end
end

-- Checks that got holds every binding of data exactly once, each dataset
-- in the service's order; returns how often consecutive items came from
-- different datasets.
local function check_listing(expected, got)
  assert.equal(#expected, #got)
  local seen, by_ds = {}, {}
  for _, b in ipairs(got) do
    local key = b.DatasetName .. " " .. b.URI
    assert.is_nil(seen[key], "twice: " .. key)
    seen[key] = true
    by_ds[b.DatasetName] = by_ds[b.DatasetName] or {}
    table.insert(by_ds[b.DatasetName], b.URI)
  end
  local want = {}
  for _, b in ipairs(expected) do
    want[b.DatasetName] = want[b.DatasetName] or {}
    table.insert(want[b.DatasetName], b.URI)
  end
  assert.same(want, by_ds)
  local switches = 0
  for i = 2, #got do
    if got[i].DatasetName ~= got[i - 1].DatasetName then switches = switches + 1 end
  end
  return switches
end

-- The requests of one action in the server's log.
local function requests(log, action)
  local n = 0
  for _, rec in ipairs(log) do
    if rec.action == action then n = n + 1 end
  end
  return n
end

describe("parallel listing", function()
  local srv, d
  setup(function()
    srv = fixture.start()
    d = data(DATASETS, PER)
  end)
  teardown(function() srv.stop() end)
  before_each(function()
    srv.reset()
    srv.data(d)
  end)

  it("lists every binding exactly once, datasets interleaved, with at most N in flight", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local c = srv.client {}
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 5, page_size = 10 }))
    assert.is_nil(err)
    local switches = check_listing(d.Bindings, got)
    assert.is_true(switches > DATASETS, "the datasets did not interleave")
    local log = srv.log()
    assert.equal(1, requests(log, "ListDatasets"))
    assert.equal(DATASETS * 4, requests(log, "ListBindings"))
    assert.equal(5, fixture.peak_in_flight(log))
  end)

  it("all_bindings merges a parallel listing", function()
    local c = srv.client {}
    local all = assert(c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 25 }))
    check_listing(d.Bindings, all.Bindings)
    assert.equal(4, fixture.peak_in_flight(srv.log()) >= 2 and 4 or 0)
  end)
end)
