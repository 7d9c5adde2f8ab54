-- The bounds on C work (lua/calsync/sandbox.lua, "C work"): every C
-- function a policy can reach returns in bounded time, whatever its
-- arguments. One `it` per bound: exactly at the limit passes, one over
-- fails with the message policy authors see (docs/policies.md, "Limits").
local H = require "helpers"
local S = require "calsync.sandbox"

local L = S.limits

-- Runs `body` as an on_delete hook; returns the decision and the error kind.
local function run(body)
  local P, err = H.load_source("return { on_delete = function(change, booking, ctx)\n"
    .. body .. "\nend }\n", "policies/t.lua")
  assert(P, err)
  return H.decide(P, H.change(), H.booking(), H.ctx())
end

-- The hook's return value, which must not be a flag.
local function value(body)
  local d, kind = run(body)
  assert.is_nil(kind, d.reason)
  return d.reason
end

local function refused(body, message)
  local d, kind = run(body)
  assert.equal("flag", d.action)
  assert.equal("runtime", kind)
  assert.equal("policy error: policies/t.lua:2: " .. message, d.reason)
end

local function stopped(body)
  local d, kind = run(body)
  assert.equal("flag", d.action)
  assert.equal("instructions", kind, d.reason)
  assert.matches("instruction limit of 1000000 exceeded", d.reason)
end

local function ok(expr) return "return { action = 'ignore', reason = tostring(" .. expr .. ") }" end

-- Also checks that nothing of the above took long (a bound that does not
-- hold shows as a hang, which busted would not report).
local t0
before_each(function() t0 = os.clock() end)
after_each(function() assert.is_true(os.clock() - t0 < 5, "took " .. (os.clock() - t0) .. " s") end)

describe("sandbox limits: string.rep", function()
  it("repeats up to the limit, as a count and as a result", function()
    assert.equal("0", value(ok("#string.rep('', " .. L.rep .. ")")))
    assert.equal(tostring(L.rep), value(ok("#('x'):rep(" .. L.rep .. ")")))
  end)

  it("refuses one more repetition, even of nothing", function()
    refused("string.rep('', " .. (L.rep + 1) .. ")",
      "string.rep: count of 1048577 exceeds the sandbox limit of 1048576")
    refused("string.rep('', math.maxinteger)",
      "string.rep: count of 9.22e+18 exceeds the sandbox limit of 1048576")
    refused("(''):rep('9223372036854775807')",
      "string.rep: count of 9.22e+18 exceeds the sandbox limit of 1048576")
    refused("('x'):rep(" .. (L.rep + 1) .. ")",
      "string.rep: result of 1048577 bytes exceeds the sandbox limit of 1048576")
    refused("string.rep('ab', 3e5, ',,')",
      "string.rep: result of 1199998 bytes exceeds the sandbox limit of 1048576")
  end)

  it("keeps Lua's own errors", function()
    local d = run("string.rep('x', 2.5)")
    assert.matches("number has no integer representation", d.reason)
  end)
end)

describe("sandbox limits: patterns", function()
  it("refuses back-references whose matching could never end", function()
    refused("string.find(string.rep('a', 30000), '(a*)%1%1b')",
      "string.find: pattern too costly: up to 18006750780023 steps on a "
      .. "30000-byte subject, over the sandbox limit of 16777216 steps per call; "
      .. "simplify the pattern or shorten the subject")
  end)

  it("weighs a character set by its size", function()
    local set = "[" .. ("b"):rep(500) .. "]"
    local d = run("string.find(string.rep('a', 32768), '" .. set .. "*c')")
    assert.matches("string.find: pattern too costly", d.reason)
    -- the same set once per byte of a short subject is fine
    assert.equal("nil", value(ok("string.find(string.rep('a', 100), '" .. set .. "')")))
  end)

  it("allows a call up to the sandbox limit of steps, not one step more", function()
    local limit = H.LIMIT
    H.LIMIT = 1e9 -- so that only the per-call limit applies
    local n = 1
    while S.pattern_steps("string.find", "a*b", n * 2) <= L.steps do n = n * 2 end
    local hi = n * 2
    while hi - n > 1 do
      local mid = (n + hi) // 2
      if S.pattern_steps("string.find", "a*b", mid) <= L.steps then n = mid else hi = mid end
    end
    local ok1, d1 = pcall(value, ok("string.find(string.rep('a', " .. n .. "), 'a*b')"))
    local d2 = run("string.find(string.rep('a', " .. (n + 1) .. "), 'a*b')")
    H.LIMIT = limit
    assert.is_true(ok1, d1)
    assert.equal("nil", d1)
    assert.matches("over the sandbox limit of 16777216 steps per call", d2.reason)
  end)

  it("runs a match whose bound fits the call's budget, refuses one over it", function()
    -- 4 steps to an instruction. At the bound the match is not refused up
    -- front; it is charged, and with the rest of the call (the string.rep,
    -- the allocations the runtime charges) the call then runs out of
    -- instructions -- the binary's accounting, which H.decide uses.
    local n = 1
    while S.pattern_steps("string.match", "a*b", n + 1) / 4 <= H.LIMIT do n = n + 64 end
    while S.pattern_steps("string.match", "a*b", n) / 4 > H.LIMIT do n = n - 1 end
    local d1, kind1 = run("string.match(string.rep('a', " .. n .. "), 'a*b')")
    assert.is_nil(d1.reason:find("pattern too costly", 1, true), d1.reason)
    assert.equal("instructions", kind1, d1.reason)
    local d = run("string.match(string.rep('a', " .. (n + 1) .. "), 'a*b')")
    assert.matches("string.match: pattern too costly: .* over the call's budget "
      .. "of 1000000 instructions %(it would cost 100%d+%)", d.reason)
  end)

  it("charges what it allows: a loop of affordable calls hits the limit", function()
    stopped("local s = string.rep('a', 500) for i = 1, 1e6 do s:find('a*b') end")
    stopped("local s = string.rep('x', 200000) for i = 1, 1e6 do s:find('y', 1, true) end")
  end)

  it("bounds patterns of common shapes close to their real cost", function()
    -- (each bound is at least the real number of steps: tools/pattern_bound.lua)
    assert.equal(125, S.pattern_steps("string.find", "^(%d%d%d%d)%-(%d%d)%-(%d%d)", 20))
    assert.is_true(S.pattern_steps("string.gmatch", "[^\n]+", 8160) < 3e5)
    assert.is_true(S.pattern_steps("string.match", "(%d+)", 8000) < 2e5)
    assert.is_true(S.pattern_steps("string.match", "^%s*(.-)%s*$", 100) < 1e5)
  end)

  it("counts gsub's replacement once per match", function()
    local d = run("string.gsub(string.rep('a', 200000), '', string.rep('b', 1048576))")
    assert.matches("string.gsub: pattern and replacement too costly", d.reason)
    assert.equal("a-b-c", value("return { action = 'ignore', reason = (string.gsub('a b c', ' ', '-')) }"))
  end)

  it("does not scan again once a gmatch iteration is over", function()
    -- lstrlib's iterator, called after its end, rescans from its last match
    stopped("local it = string.gmatch(string.rep('a', 200000), 'b') for i = 1, 1e6 do it() end")
    assert.equal("a,b,c|nil|nil", value([[
      local t = {} for w in ("a b c"):gmatch("%a") do t[#t + 1] = w end
      local it = ("x"):gmatch("y")
      return { action = 'ignore', reason = table.concat(t, ",") .. "|" .. tostring(it()) .. "|" .. tostring(it()) }]]))
  end)

  it("keeps the subject and pattern caps", function()
    refused("string.find(string.rep('a', 300000), 'a', 1, true)",
      "string.find: subject of 300000 bytes exceeds the sandbox limit of 262144")
    refused("string.match('a', string.rep('a', 513))",
      "string.match: pattern of 513 bytes exceeds the sandbox limit of 512")
  end)
end)

describe("sandbox limits: results of one call", function()
  it("unpacks up to the limit, not one more", function()
    assert.equal(tostring(L.results), value(ok("select('#', table.unpack({}, 1, " .. L.results .. "))")))
    refused("table.unpack({}, 1, " .. (L.results + 1) .. ")",
      "table.unpack: 8193 results exceed the sandbox limit of 8192")
    refused("select('#', table.unpack({}, 1, 1e9))",
      "table.unpack: 1000000000 results exceed the sandbox limit of 8192")
  end)

  it("returns up to the limit of bytes and code points", function()
    local s = "string.rep('a', " .. (L.results + 1) .. ")"
    assert.equal(tostring(L.results), value(ok("select('#', " .. s .. ":byte(2, -1))")))
    refused(s .. ":byte(1, -1)", "string.byte: 8193 results exceed the sandbox limit of 8192")
    assert.equal(tostring(L.results), value(ok("select('#', utf8.codepoint(" .. s .. ", 2, -1))")))
    refused("utf8.codepoint(" .. s .. ", 1, -1)",
      "utf8.codepoint: slice of 8193 bytes exceeds the sandbox limit of 8192")
  end)

  it("caps string.unpack's format and string.pack's fixed size", function()
    assert.equal("8192", value(ok("select('#', string.unpack(string.rep('b', 8191), string.rep('x', 8191)))")))
    refused("string.unpack(string.rep('b', 8192), string.rep('x', 8192))",
      "string.unpack: format of 8192 bytes exceeds the sandbox limit of 8191")
    assert.equal("1048576", value(ok("#string.pack('c1048576', '')")))
    refused("string.pack('c1048577', '')",
      "string.pack: result of 1048577 bytes exceeds the sandbox limit of 1048576")
  end)

  it("keeps format's own limits", function()
    local d = run("string.format('%99999d', 1)")
    assert.equal("policy error: policies/t.lua:2: invalid conversion specification: '%99999d'", d.reason)
  end)
end)

describe("sandbox limits: table functions", function()
  it("moves elements as ltablib does", function()
    assert.equal("1,2,1,2,3", value([[local t = table.move({1, 2, 3}, 1, 3, 3)
      return { action = 'ignore', reason = table.concat(t, ",") }]]))
    assert.equal("2,3,3", value([[local t = table.move({1, 2, 3}, 2, 3, 1)
      return { action = 'ignore', reason = table.concat(t, ",") }]]))
    assert.equal("9,1,2", value([[local t = table.move({1, 2}, 1, 2, 2, {9})
      return { action = 'ignore', reason = table.concat(t, ",") }]]))
    refused("table.move({}, -1, math.maxinteger, 1)",
      "bad argument #3 to 'move' (too many elements to move)")
    refused("table.move({}, 1, 2, math.maxinteger)",
      "bad argument #4 to 'move' (destination wrap around)")
    refused("table.move({}, 1, 2, 'x')",
      "bad argument #4 to 'move' (number expected, got string)")
  end)

  it("counts every element moved: a huge range stops at the instruction limit", function()
    stopped("table.move({}, 1, 2^40, 2)")
  end)

  it("inserts and removes as ltablib does", function()
    assert.equal("0,1,2,3|3|0,1,2|x", value([[
      local t = {1, 3} table.insert(t, 2, 2) table.insert(t, 1, 0)
      local a = table.concat(t, ",", 1, 4)
      local r = table.remove(t)
      local e = {} table.insert(e, "x")
      return { action = 'ignore', reason = a .. "|" .. r .. "|" .. table.concat(t, ",") .. "|" .. e[1] }]]))
    refused("table.insert({}, 3, 1)", "bad argument #2 to 'insert' (position out of bounds)")
    refused("table.insert({}, 1, 2, 3)", "wrong number of arguments to 'insert'")
    refused("table.remove({1}, 5)", "bad argument #1 to 'remove' (position out of bounds)")
    local d = run("table.insert(ctx.settings, 1)")
    assert.matches("^policy error: policies/t.lua:2: attempt to modify a read%-only table", d.reason)
  end)

  it("stops a shift over a length that never ends", function()
    stopped("table.insert(setmetatable({}, { __len = function() return math.maxinteger - 1 end }), 1, 1)")
    stopped("table.remove(setmetatable({}, { __len = function() return math.maxinteger end }), 1)")
  end)

  it("sorts as table.sort does, and stops a sort that would not end", function()
    assert.equal("1,2,3|c,b,a", value([[
      local t, u = {3, 1, 2}, {"a", "c", "b"}
      table.sort(t) table.sort(u, function(a, b) return a > b end)
      return { action = 'ignore', reason = table.concat(t, ",") .. "|" .. table.concat(u, ",") }]]))
    -- 200000 references to one 1 MiB string: each comparison scans it
    stopped("local s = string.rep('a', 1048576) local t = {} for i = 1, 200000 do t[i] = s end table.sort(t)")
    -- a C comparator and a length that never ends
    stopped("table.sort(setmetatable({}, { __len = function() return 2^31 - 2 end, "
      .. "__index = tostring }), rawequal)")
    local d = run("table.sort({1, 'x'})")
    assert.matches("^policy error: policies/t.lua:2: attempt to compare", d.reason)
  end)

  it("charges concat per element", function()
    assert.equal("a-b", value(ok("table.concat({'a', 'b'}, '-')")))
    stopped("table.concat(setmetatable({}, { __index = tostring }), '', 1, 2^40)")
  end)
end)

describe("sandbox limits: scanning functions", function()
  it("charges the bytes they scan", function()
    stopped("local s = string.rep('1', 1048576) for i = 1, 1e6 do tonumber(s) end")
    stopped("local s = string.rep('a', 1048576) for i = 1, 1e6 do utf8.len(s) end")
    stopped("local s = '--' .. string.rep('x', 1048000) for i = 1, 1e6 do load(s) end")
    stopped("local f = string.rep('x', 1000000) for i = 1, 1e6 do string.format(f) end")
    stopped("local f = string.rep('x', 1000000) for i = 1, 1e6 do os.date(f) end")
  end)

  it("leaves strings without a metatable to change", function()
    local d = run("setmetatable('', {})")
    assert.matches("bad argument #1 to 'setmetatable' %(table expected, got string%)", d.reason)
  end)

  it("iterates utf8.codes as before, and charges a step off the loop", function()
    assert.equal("1:104,2:233,4:108", value([[local t = {}
      for p, c in utf8.codes("hél") do t[#t + 1] = p .. ":" .. c end
      return { action = 'ignore', reason = table.concat(t, ",") }]]))
    stopped("local s = 'a' .. string.rep('\\x80', 1048000) local f = utf8.codes(s, true) "
      .. "for i = 1, 1e6 do pcall(f, s, 1) end")
  end)
end)
