-- The sandbox rules as a policy author meets them (the same builder the
-- binary uses; tests/unit/test_policy.c checks them again in C).
local H = require "helpers"

local function load(src) return H.load_source(src, "policies/t.lua") end

describe("sandbox: load check", function()
  it("requires a table of hooks", function()
    local P, err = load("return 1\n")
    assert.is_nil(P)
    assert.equal("policies/t.lua:1: policy must return a table of hooks, got number", err)
  end)

  it("names an unknown hook at its line", function()
    local _, err = load("return {\n\n  on_delte = function() end,\n}\n")
    assert.matches("^policies/t.lua:3: unknown hook 'on_delte'", err)
  end)

  it("requires hooks to be functions", function()
    local _, err = load("return { on_delete = true }\n")
    assert.matches("hook 'on_delete' must be a function, got boolean", err)
  end)

  it("stops an endless loop at load", function()
    local _, err = load("while true do end\n")
    assert.matches("instruction limit", err)
  end)
end)

describe("sandbox: environment", function()
  it("errors on an unknown global, naming it", function()
    local P = load("return { on_delete = function() return nope end }\n")
    local d = H.decide(P, H.change(), H.booking(), H.ctx())
    assert.equal("flag", d.action)
    assert.matches("undefined global 'nope'", d.reason)
  end)

  for _, name in ipairs({ "io", "debug", "dofile", "loadfile", "package", "rawset" }) do
    it("has no " .. name, function()
      local _, err = load("return " .. name .. "\n")
      assert.matches("undefined global '" .. name .. "'", err)
    end)
  end

  it("offers only os.time, os.date and os.clock", function()
    local P = load([[return { on_delete = function()
      return { action = "ignore", reason = tostring(os.execute) .. tostring(os.getenv)
        .. type(os.time) .. type(os.date) .. type(os.clock) } end }]])
    local d = H.decide(P, H.change(), H.booking(), H.ctx())
    assert.equal("nilnilfunctionfunctionfunction", d.reason)
  end)

  it("requires only the bundled calsync modules", function()
    local _, err = load("local s = require 'calsync.sandbox'\nreturn {}\n")
    assert.matches("module 'calsync.sandbox' not available", err)
    local P = load("local c = require 'calsync'\nreturn { on_delete = function() "
      .. "return { action = 'ignore', reason = tostring(c.time('1970-01-02T00:00:00Z')) } end }")
    assert.equal("86400", H.decide(P, H.change(), H.booking(), H.ctx()).reason)
  end)

  it("loads text chunks only", function()
    local P = load([[return { on_delete = function()
      local f, err = load(string.dump(function() end))
      return { action = "ignore", reason = tostring(err) } end }]])
    local d = H.decide(P, H.change(), H.booking(), H.ctx())
    assert.equal("flag", d.action) -- string.dump is not offered
    P = load([[return { on_delete = function()
      local f, err = load("\27Lua", "x", "b")
      return { action = "ignore", reason = tostring(f) } end }]])
    assert.matches("only text chunks", H.decide(P, H.change(), H.booking(), H.ctx()).reason)
  end)

  it("locks globals once the chunk has run", function()
    local P = load("count = 0\nreturn { on_delete = function() count = count + 1 "
      .. "return { action = 'ignore', reason = '' .. count } end }\n")
    local d = H.decide(P, H.change(), H.booking(), H.ctx())
    assert.equal("flag", d.action)
    assert.matches("cannot assign global 'count'", d.reason)
  end)
end)

describe("sandbox: arguments", function()
  it("are read-only", function()
    local P = load("return { on_delete = function(change, booking) booking.status = 'x' end }\n")
    local d = H.decide(P, H.change(), H.booking(), H.ctx())
    assert.equal("flag", d.action)
    assert.matches("read%-only", d.reason)
  end)

  it("are read-only deep down", function()
    local P = load("return { on_delete = function(change) change.old.title = 'x' end }\n")
    assert.matches("read%-only", H.decide(P, H.change(), H.booking(), H.ctx()).reason)
  end)

  it("keep their metatable to themselves", function()
    local P = load("return { on_delete = function(change) setmetatable(change, nil) end }\n")
    assert.matches("protected metatable", H.decide(P, H.change(), H.booking(), H.ctx()).reason)
  end)

  it("can be iterated and measured", function()
    local P = load([[return { on_delete = function(change, booking, ctx)
      local n = 0
      for k, v in pairs(booking) do n = n + 1 end
      return { action = "ignore", reason = n .. "/" .. #ctx.settings.days } end }]])
    local d = H.decide(P, H.change(), H.booking(), H.ctx{ settings = { days = { 1, 2 } } })
    assert.equal("9/2", d.reason)
  end)
end)

describe("sandbox: limits", function()
  it("caps string.rep", function()
    local P = load("return { on_delete = function() local s = ('x'):rep(1e8) end }\n")
    assert.matches("string.rep: result of 100000000 bytes", H.decide(P, H.change(), H.booking(), H.ctx()).reason)
  end)

  it("refuses a pattern too costly for its subject", function()
    local P = load("return { on_delete = function() return string.find(string.rep('a', 5000), '.-.-.-b') end }\n")
    assert.matches("pattern too costly", H.decide(P, H.change(), H.booking(), H.ctx()).reason)
  end)

  it("stops an endless loop that pcall tries to swallow", function()
    local P = load([[return { on_delete = function()
      while true do pcall(function() while true do end end) end end }]])
    local d, kind = H.decide(P, H.change(), H.booking(), H.ctx())
    assert.equal("flag", d.action)
    assert.equal("instructions", kind)
  end)
end)

describe("calsync module", function()
  local c = H.calsync
  it("parses RFC 3339 with offsets and all-day dates", function()
    assert.equal(1795510800, c.time("2026-11-24T09:00:00Z"))
    assert.equal(1795510800, c.time("2026-11-24T10:00:00+01:00"))
    assert.equal(1795510800.5, c.time("2026-11-24T09:00:00.5Z"))
    assert.equal(1795478400, c.time("2026-11-24"))
    assert.has_error(function() c.time("2026-02-30T00:00:00Z") end)
    assert.has_error(function() c.time("yesterday") end)
  end)

  it("formats and reads the wall clock", function()
    assert.equal("2026-11-24T09:00:00Z", c.format(1795510800))
    local k = c.clock(1795510800, "+01:00")
    assert.same({ 2026, 11, 24, 10, 0, 2 }, { k.year, k.month, k.day, k.hour, k.min, k.wday })
  end)
end)

describe("sandbox: deterministic decisions", function()
  local P = assert(H.load_source([[
local at_load = math.random(1000000000)
return { on_delete = function(change, booking, ctx)
  return { action = "flag", reason = os.time() .. " " .. os.date("!%H:%M") .. " "
    .. math.random(1000000000) .. " " .. at_load }
end }]], "policies/r.lua"))

  it("answers os.time() and os.date() with ctx.now", function()
    local d = H.decide(P, H.change{ kind = "delete" }, H.booking{}, H.ctx{ now = 1795510800 })
    assert.equal("1795510800 09:00", d.reason:sub(1, 16))
  end)

  it("draws the same numbers for the same booking and now", function()
    local a = H.decide(P, H.change{ kind = "delete" }, H.booking{ uid = "bk-1" }, H.ctx{ now = 1795510800 })
    local b = H.decide(P, H.change{ kind = "delete" }, H.booking{ uid = "bk-1" }, H.ctx{ now = 1795510800 })
    local c = H.decide(P, H.change{ kind = "delete" }, H.booking{ uid = "bk-2" }, H.ctx{ now = 1795510800 })
    assert.equal(a.reason, b.reason)
    assert.are_not.equal(a.reason, c.reason)
    -- the binary's numbers for these inputs (calsync policy test, the same
    -- seed: FNV-1a of the uid and ctx.now), so specs and service agree
    assert.equal("1795510800 09:00 646084175 934556610", a.reason)
  end)
end)
