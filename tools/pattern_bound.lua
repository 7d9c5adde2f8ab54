-- pattern_bound.lua -- checks S.pattern_steps (lua/calsync/sandbox.lua), the
-- bound the sandbox charges for a pattern call, against the steps Lua's
-- matcher really takes, on random patterns and subjects.
--
-- It needs a Lua 5.4 interpreter whose lstrlib.c counts steps the way the
-- bound defines them and offers the count as string.steps() (returns it and
-- resets it to 0). Build one from the Lua 5.4.4 sources: in lstrlib.c add a
-- static double counter and a string.steps function that returns it and
-- zeroes it, and add to the counter
--   - 1 at the `init:` label of match() (entering an item, or the end);
--   - ep - p in singlematch() (the bytes of the class tested);
--   - 1 per byte scanned in matchbalance();
--   - 1, plus the capture's length when it is compared, in match_capture();
--   - 2 * (ep - p) in the %f case of match();
--   - 1 per start position tried by str_find_aux, gmatch_aux and str_gsub;
--   - in lmemfind, per candidate: the bytes memchr skipped, 1, and l2.
-- Then, from the repository root:
--
--   /path/to/counting/lua tools/pattern_bound.lua [SEED [CASES [LONG]]]
--
-- LONG (0 or 1): subjects up to 200 bytes, half of them "aaa...ab", the
-- worst case of most backtracking (default: up to 60 mixed bytes).
-- Prints every case where the bound is below the count (there must be
-- none) and the largest ratio bound / count seen.
package.path = "lua/?.lua;" .. package.path
local S = require "calsync.sandbox"
assert(string.steps, "run with a step-counting Lua (see the header)")

local seed = tonumber(arg[1]) or os.time()
local cases = tonumber(arg[2]) or 100000
local long = arg[3] == "1"
math.randomseed(seed)

local atoms = { "a", "b", ".", "%a", "[ab]", "[^a]", "%d", "(", ")", "()", "%1",
  "%2", "%bab", "%f[a]", "$", "x", "[%a]" }
local suffixes = { "", "", "", "*", "+", "-", "?" }

local function pattern()
  local t = {}
  if math.random() < 0.3 then t[1] = "^" end
  for _ = 1, math.random(1, long and 5 or 7) do
    local a = atoms[math.random(#atoms)]
    t[#t + 1] = a
    -- only classes take a suffix
    if not a:find("^[()%$]") and not a:find("^%%[bf%d]") then
      t[#t + 1] = suffixes[math.random(#suffixes)]
    end
  end
  return table.concat(t)
end

local function subject()
  local t, alpha = {}, { "a", "a", "a", "b", "1", " " }
  local n = math.random(0, long and 200 or 60)
  local mono = long and math.random() < 0.5
  for i = 1, n do
    t[i] = mono and (i == n and "b" or "a") or alpha[math.random(#alpha)]
  end
  return table.concat(t)
end

local fns = { "string.find", "string.match", "string.gmatch", "string.gsub" }
local checked, under, loosest = 0, 0, 0
for _ = 1, cases do
  local p, s = pattern(), subject()
  local fn = fns[math.random(#fns)]
  local maxn
  if fn == "string.gsub" and math.random() < 0.3 then maxn = math.random(0, 5) end
  string.steps()
  local ok = pcall(function()
    if fn == "string.find" then string.find(s, p)
    elseif fn == "string.match" then string.match(s, p)
    elseif fn == "string.gmatch" then for _ in string.gmatch(s, p) do end
    else string.gsub(s, p, "x", maxn) end
  end)
  local real = string.steps()
  if ok then -- (a malformed pattern raises before its bound matters)
    checked = checked + 1
    local bound = S.pattern_steps(fn, p, #s, maxn)
    if real > bound then
      under = under + 1
      print(("BELOW %s(%q, %q, %s): %g steps, bound %g"):format(fn, s, p,
        tostring(maxn), real, bound))
    elseif real > 0 and bound / real > loosest then
      loosest = bound / real
    end
  end
end
print(("seed %d: %d cases checked, %d with the bound below the count, "
  .. "largest bound/count %.3g"):format(seed, checked, under, loosest))
os.exit(under == 0)
