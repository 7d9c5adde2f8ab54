-- calsync.sandbox -- the environment every policy runs in (DESIGN §5).
--
-- One builder for the service, `calsync policy check|test` and the busted
-- specs (spec/helpers.lua), so a policy that passes its specs cannot fail
-- live for a sandbox reason. src/policy/sandbox.c runs this file with the state's
-- full globals; it is bundled but never offered to policies (`require`
-- only hands out the modules registered below, and this one never is).
--
-- The environment is built UP from an allowlist (S.allowed); the names left
-- out on purpose are listed with their reason in S.denied, so nobody re-adds
-- one by accident. What the runtime adds around this file, in C: the
-- instruction-count hook, the memory cap, the traceback handler. What this
-- file adds: bounds on the work of every C function a policy can reach
-- ("C work" below), because the hook cannot interrupt C code.
--
--   local S = require "calsync.sandbox"          -- (trusted code only)
--   local lib, register = S.library(_G, {log = function(msg) ... end})
--   register("calsync", calsync_module)          -- offered to require
--   local env = S.new_env(lib)                   -- one per policy
--   local f = load(src, "@policies/x.lua", "t", env); local t = f()
--   S.lock(env)                                  -- globals read-only now
--   local hooks, err = S.check(t, "policies/x.lua", last_line)
--   hooks.on_delete(S.readonly(change), S.readonly(booking), S.readonly(ctx))
local S = {}

-- Captured at load: later changes to the globals cannot reach the sandbox.
local type, pairs, next, error, tostring, tonumber, select, rawset, rawget,
rawequal, pcall, setmetatable, getmetatable, load, sort, concat, sub, find,
gsub, byte, sformat, floor, tointeger, ult, huge, maxinteger =
    type, pairs, next, error, tostring, tonumber, select, rawset, rawget,
    rawequal, pcall, setmetatable, getmetatable, load, table.sort,
    table.concat, string.sub, string.find, string.gsub, string.byte,
    string.format, math.floor, math.tointeger, math.ult, math.huge,
    math.maxinteger

-- ------------------------------------------------------------ allowlist

S.allowed = {
    base = { "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall",
        "select", "tonumber", "tostring", "type", "rawequal", "rawlen",
        "rawget", "setmetatable", "getmetatable", "_VERSION" },
    -- (bounded or charged before they run, see "C work": string.rep, find,
    -- match, gmatch, gsub, byte, format, pack, packsize, unpack; every
    -- table function but pack; utf8.len, offset, codepoint, codes;
    -- os.date; tonumber and load)
    string = { "byte", "char", "format", "len", "lower", "upper", "reverse",
        "sub", "pack", "packsize", "unpack", "rep", "find", "match", "gmatch",
        "gsub" },
    table = { "concat", "insert", "move", "pack", "remove", "sort", "unpack" },
    math = { "abs", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge",
        "log", "max", "maxinteger", "min", "mininteger", "modf", "pi", "rad",
        "random", "randomseed", "sin", "sqrt", "tan", "tointeger", "type",
        "ult", "atan", "asin", "acos" },
    utf8 = { "char", "charpattern", "codepoint", "codes", "len", "offset" },
    os = { "time", "date", "clock" },
}

-- Offered, but as calsync's own version of the name.
S.replaced = {
    print = "goes to the service log (event=policy.log): stdout carries "
        .. "`calsync policy test`'s JSON",
    load = "text chunks only (mode \"t\"), in the policy's own environment "
        .. "unless one is given",
    require = "returns only the bundled calsync modules",
    collectgarbage = "only collectgarbage(\"count\"): the collector is the "
        .. "runtime's, not the policy's",
}

-- Left out on purpose, each with its reason. Reading one errors.
S.denied = {
    io = "no file or process I/O from a policy",
    debug = "reaches every local, upvalue, metatable and hook (and could "
        .. "remove the instruction limit)",
    package = "loads C modules and files from disk",
    coroutine = "not in the contract's sandbox",
    dofile = "reads files",
    loadfile = "reads files",
    rawset = "writes through the read-only argument proxies",
    ["xpcall's handler after a limit hit"] = "it would run with the count "
        .. "hook off (xpcall is wrapped to skip it)",
    ["__gc (setmetatable)"] = "a finalizer runs outside any call's limits",
    _G = "the environment is locked after load; use locals",
    ["string.dump"] = "produces bytecode, which is never loaded",
    ["os.execute"] = "runs processes",
    ["os.exit"] = "stops the service",
    ["os.getenv"] = "leaks the service's environment (secrets)",
    ["os.remove"] = "writes the file system",
    ["os.rename"] = "writes the file system",
    ["os.tmpname"] = "creates files",
    ["os.setlocale"] = "changes the whole process",
}

-- The hooks a policy table may hold (S.check).
S.HOOKS = { on_delete = true, on_time_change = true, on_title_change = true,
    on_instance = true, on_past = true, on_response = true }

-- The actions a decision may name (src/policy/decide.c validates them).
S.ACTIONS = { cancel = true, reschedule = true, update = true, ignore = true,
    flag = true }

-- Bounds of the work C functions do for a policy (see "C work" below and
-- docs/internals/policy.md, "Limits"). The count hook cannot run inside a
-- C function, so every C function a policy can reach either does O(1)
-- work, or work linear in something that already exists in the state
-- (bounded by the memory cap), or is wrapped here so that its work is
-- bounded before it starts and charged to the instruction budget.
S.limits = {
    subject = 256 * 1024, -- bytes of a subject of find/match/gmatch/gsub
    pattern = 512,        -- bytes of a pattern
    rep = 1024 * 1024,    -- bytes of a string.rep result, and its count
    steps = 2 ^ 24,       -- estimated matcher steps of one pattern call
    results = 8192,       -- values one call may return (table.unpack,
                          -- string.byte, utf8.codepoint, string.unpack)
}

-- ------------------------------------------------------- read-only proxies

local function ro_error(_, k)
    error("attempt to modify a read-only table (field '" .. tostring(k)
        .. "')", 2)
end

-- Deep read-only view of t: nested tables are wrapped on access (cached).
-- Stock Lua 5.4 has no read-only tables, so this is a proxy: __index,
-- __len, __pairs, a __newindex that errors and __metatable set, so neither
-- setmetatable nor getmetatable reach the real table. rawset is not offered.
local target = setmetatable({}, { __mode = "k" }) -- proxy -> table
local proxy_of = setmetatable({}, { __mode = "k" }) -- table -> proxy
local ro_mt = {}

local function readonly(t)
    local p = proxy_of[t]
    if p == nil then
        p = setmetatable({}, ro_mt)
        target[p] = t
        proxy_of[t] = p
    end
    return p
end

ro_mt.__index = function(p, k)
    local v = target[p][k]
    if type(v) == "table" then return readonly(v) end
    return v
end
ro_mt.__newindex = ro_error
ro_mt.__len = function(p) return #target[p] end
ro_mt.__pairs = function(p)
    local t = target[p]
    return function(_, k)
        local nk, nv = next(t, k)
        if type(nv) == "table" then nv = readonly(nv) end
        return nk, nv
    end, p, nil
end
ro_mt.__metatable = "read-only"

S.readonly = readonly

-- Shallow, fast read-only view for library tables (no wrapping needed).
local function frozen(t)
    return setmetatable({}, {
        __index = t,
        __newindex = ro_error,
        __len = function() return #t end,
        __pairs = function() return next, t, nil end,
        __metatable = "read-only",
    })
end

-- ----------------------------------------------------------------- C work
--
-- The count hook runs between VM instructions, never inside a C function,
-- so a C function a policy can reach must not run long whatever its
-- arguments. Each one is in one of three classes (the full table is in
-- docs/internals/policy.md, "C work"):
--
--   constant   O(1): type, rawget, select, math.*, os.time, os.clock, ...
--   linear     work linear in a value that already exists in the state
--              (a string, a table), which the memory cap bounds: len,
--              sub, lower, next, tostring, == ... Those that allocate
--              their result are charged by the allocator (1 instruction
--              per 32 bytes); those that only scan are charged here.
--   wrapped    work that depends on a count, a range or a pattern: bounded
--              below before the C function starts (refused with an error
--              naming the limit), and charged to the instruction budget;
--              or redone in Lua, where the hook counts every step.
--
-- charge(n) adds n "bytes" of work (32 to one instruction); once the
-- budget is spent the very next instruction raises the instruction limit,
-- so a charge made before a C call stops the call from running.

local charge = function() end -- set by S.library: bytes of C work
-- the running call's instruction budget; huge outside a call (trusted
-- code: the bundled modules at setup, busted itself in the specs)
local budget = function() return huge end

-- Work charged per unit, in bytes (32 bytes = one instruction). Measured
-- against a VM instruction (1 to 2 ns here): a value pushed or an element
-- visited costs about one; a matcher step 0.2 to 2 ns, charged a quarter,
-- because what is charged is the worst case of a pattern, which real
-- subjects rarely come near; parsing source text 1 to 6 ns per byte.
local BYTES_PER_VALUE = 32
local BYTES_PER_STEP = 8
local BYTES_PER_SOURCE_BYTE = 8

-- A count as messages show it.
local function num(x)
    if x ~= x or x >= 2 ^ 53 or x <= -2 ^ 53 then return sformat("%.3g", x) end
    return sformat("%d", floor(x))
end

-- "fname: <what> exceed(s) the sandbox limit of <limit>", raised at level.
local function limit_error(fname, what, limit, level, plural)
    error(fname .. ": " .. what .. (plural and " exceed" or " exceeds")
        .. " the sandbox limit of " .. num(limit), level + 1)
end

-- Byte length of v as luaL_checklstring sees it, or nil when C raises its
-- own argument error (before doing any work).
local function slen(v)
    local t = type(v)
    if t == "string" then return #v end
    if t == "number" then return #tostring(v) end
    return nil
end

-- Errors raised here or by a C function called from here name this file
-- ("lua/calsync/sandbox.lua:NNN: ..."): the runtime's message handler
-- (src/policy/sandbox.c) puts the policy's line in its place, as if the policy
-- had called the C function itself.

-- ...................................................... pattern matching
--
-- Lua's matcher (lstrlib.c) backtracks without memory, so its cost is a
-- polynomial in the subject length n. S.pattern_steps gives an upper
-- bound of its steps, a step being: entering one pattern item, testing
-- one subject byte against one byte of a class, or comparing one byte in
-- a back-reference or a %b scan. With x = n + 1, per attempt at one start:
--
--   every item is reached at most M times, M the product of the branching
--   of the items before it: x for a repetition (*, +, -), 2 for an
--   optional (?), 1 for anything else. Reaching it costs 1 plus its
--   weight w, the bytes of its class (1 for "a" or ".", 2 for "%d", the
--   length of a "[set]"), or for what scans the subject w * (x + 1) (the
--   expansion of a repetition) or x (%b, a back-reference %1-%9).
--
-- A suffix of the pattern that matches from any position (captures,
-- repetitions and optionals that may be empty, ".*" or ".-" before a
-- suffix that matches the empty string at the end) ends the attempt in a
-- success as soon as it is reached: it is counted once per match, not per
-- attempt, and a repetition followed by it does not branch. An unanchored
-- find or match tries each start position once, and an attempt at a start
-- y bytes before the end costs head(y): summed over all starts, at most
-- sum over d of c_d * (x^(d+1) / (d+1) + x^d) for head = sum of c_d * x^d.
-- gmatch and gsub try each position at most twice (again after an empty
-- match there) and match at most x times; a suffix that does not branch
-- then costs w * (1 + the match's length), 2x * w over the whole subject.
-- tools/pattern_bound.lua checks the bound against a step-counting build
-- of lstrlib.c (none below the count in 1.1 million random cases).

-- Index just past the class at p[i] == "[" (lstrlib's classend).
local function class_end(p, i)
    local n = #p
    i = i + 1
    if byte(p, i) == 94 then i = i + 1 end -- "^"
    repeat
        if i > n then return n + 1 end     -- malformed: C raises there
        local c = byte(p, i)
        i = i + 1
        if c == 37 then i = i + 1 end      -- "%x" escape
    until byte(p, i) == 93                 -- "]"
    return i + 1
end

-- Item kinds.
local SINGLE, REP, OPT, CAP, POS_END, SCAN = 1, 2, 3, 4, 5, 6

-- A pattern without these is a plain search for find (lstrlib's SPECIALS).
local SPECIALS = "[%^%$%*%+%?%.%(%)%[%]%%%-]"

-- Profile of pattern p: the coefficients (index d + 1: of x^d) of the cost
-- of the head (the items before the always-matching suffix), of the tail
-- (that suffix), whether the tail branches, and its total weight.
-- anchor: a leading "^" anchors (find, match, gsub; not gmatch).
local function profile(p, anchor)
    local K, W, ANY = {}, {}, {}
    local m = 0
    local function add(k, w, any)
        m = m + 1
        K[m], W[m], ANY[m] = k, w, any or false
    end
    local n = #p
    local i = 1
    local anchored = anchor and byte(p, 1) == 94
    if anchored then i = 2 end
    while i <= n do
        local c, d = byte(p, i), byte(p, i + 1)
        if c == 40 then                                   -- "(" or "()"
            add(CAP, 1)
            i = i + (d == 41 and 2 or 1)
        elseif c == 41 then                               -- ")"
            add(CAP, 1)
            i = i + 1
        elseif c == 36 and i == n then                    -- final "$"
            add(POS_END, 1)
            i = i + 1
        elseif c == 37 and d == 98 then                   -- %bxy
            add(SCAN, 1)
            i = i + 4
        elseif c == 37 and d == 102 then                  -- %f[set]
            local j = byte(p, i + 2) == 91 and class_end(p, i + 2) or i + 3
            add(SINGLE, 2 * (j - i))
            i = j
        elseif c == 37 and d and d >= 48 and d <= 57 then -- %0-%9
            add(SCAN, 1)
            i = i + 2
        else                                              -- a class
            local j
            if c == 37 then j = i + 2
            elseif c == 91 then j = class_end(p, i)
            else j = i + 1 end
            local w, q = j - i, byte(p, j)
            local any = c == 46 and w == 1                -- "."
            if q == 42 or q == 45 then                    -- * -
                add(REP, w, any)
                j = j + 1
            elseif q == 43 then                           -- + is x x*
                add(SINGLE, w)
                add(REP, w, any)
                j = j + 1
            elseif q == 63 then                           -- ?
                add(OPT, w)
                j = j + 1
            else
                add(SINGLE, w)
            end
            i = j
        end
    end
    -- U[k]: items k.. match from any position; E[k]: they match the empty
    -- string at the end of the subject.
    local U, E = { [m + 1] = true }, { [m + 1] = true }
    for k = m, 1, -1 do
        local kind = K[k]
        if kind == CAP or kind == OPT then
            U[k], E[k] = U[k + 1], E[k + 1]
        elseif kind == REP then
            U[k], E[k] = U[k + 1] or (ANY[k] and E[k + 1]), E[k + 1]
        elseif kind == POS_END then
            U[k], E[k] = false, E[k + 1]
        else
            U[k], E[k] = false, false
        end
    end
    local h = m + 1
    for k = 1, m do
        if U[k] then
            h = k
            break
        end
    end
    -- Each reach of an item costs 1 (entering it) plus its weight, or its
    -- weight times x for what scans; with_end: reaching the end counts too.
    local function poly(from, to, with_end)
        local coef, deg, mult, linear = { 0, 0 }, 0, 1, true
        for k = from, to do
            local kind = K[k]
            local d = deg + ((kind == REP or kind == SCAN) and 2 or 1)
            for z = #coef + 1, d do coef[z] = 0 end
            coef[deg + 1] = coef[deg + 1] + mult
            coef[d] = coef[d] + mult * W[k]
            if kind == REP then -- lstrlib tests one byte before expanding
                coef[deg + 1] = coef[deg + 1] + mult * W[k]
            end
            if not U[k + 1] then
                if kind == REP then
                    deg, linear = deg + 1, false
                elseif kind == OPT then
                    mult, linear = mult * 2, false
                end
            end
        end
        if with_end then
            for z = #coef + 1, deg + 1 do coef[z] = 0 end
            coef[deg + 1] = coef[deg + 1] + mult
        end
        return coef, linear
    end
    local head = poly(1, h - 1)
    local tail, linear = poly(h, m, true)
    local wtail = 1
    for k = h, m do wtail = wtail + 1 + 2 * W[k] end
    return { anchored = anchored, head = head, tail = tail, linear = linear,
        wtail = wtail, plain = not find(p, SPECIALS) }
end

local function eval(coef, x)
    local v = 0
    for d = #coef, 1, -1 do v = v * x + coef[d] end
    return v
end

-- An upper bound of eval(coef, y) summed over y = 1 .. x (coef[d + 1] >= 0
-- multiplies y^d, increasing in y: the sum is at most the integral from 0
-- to x plus the last term).
local function eval_sum(coef, x)
    local v = 0
    for d = #coef, 1, -1 do
        v = v + coef[d] * (x ^ d / d + x ^ (d - 1))
    end
    return v
end

-- Profiles of recent patterns, per anchoring mode, so a pattern used in a
-- loop is parsed once. At most 64; emptied when full.
local profiles = { [true] = {}, [false] = {} }
local nprofiles = 0

local function profile_of(p, anchor)
    local pr = profiles[anchor][p]
    if pr == nil then
        if nprofiles >= 64 then
            profiles[true], profiles[false], nprofiles = {}, {}, 0
        end
        pr = profile(p, anchor)
        profiles[anchor][p] = pr
        nprofiles = nprofiles + 1
    end
    return pr
end

--- Upper bound of the matcher steps of one call of fname ("string.find",
--- ".match", ".gmatch" or ".gsub") with pattern p on an n-byte subject;
--- maxn: gsub's n (nil: no limit).
function S.pattern_steps(fname, p, n, maxn)
    local pr = profile_of(p, fname ~= "string.gmatch")
    -- (the last answer of a profile is kept: a loop asks the same again)
    if pr.n == n and pr.fname == fname and pr.maxn == maxn then return pr.steps end
    local steps = S.pattern_bound(pr, fname, n, maxn)
    pr.n, pr.fname, pr.maxn, pr.steps = n, fname, maxn, steps
    return steps
end

function S.pattern_bound(pr, fname, n, maxn)
    local many = fname == "string.gmatch" or fname == "string.gsub"
    local x = n + 1
    local tail = pr.linear and pr.wtail * x or eval(pr.tail, x)
    if pr.anchored then return eval(pr.head, x) + 1 + tail end -- one attempt
    local heads = eval_sum(pr.head, x) + x -- every start, + 1 each
    if not many then return heads + tail end
    if pr.linear then return 2 * heads + 2 * x * pr.wtail end
    local matches = x
    if maxn and maxn < x then matches = maxn > 0 and maxn or 0 end
    return 2 * heads + matches * tail
end

-- Checks one call of a pattern function and charges its worst case before
-- it runs. Refused (an ordinary error, before any work) above
-- S.limits.steps or above the call's whole instruction budget; else
-- charged, which stops the call at the instruction limit if the budget
-- left is too small for it. find with plain (or a pattern without
-- special characters) is a substring search: (n + 1) * #p steps at most.
-- extra: steps of work besides matching (gsub's replacement).
local function check_match(fname, s, p, plain, maxn, extra)
    local ls = type(s) == "string" and #s or slen(s)
    local lp = type(p) == "string" and #p or slen(p)
    if not ls or not lp then return end -- C raises the argument error
    local L = S.limits
    if ls > L.subject then
        limit_error(fname, "subject of " .. ls .. " bytes", L.subject, 3)
    end
    local steps
    if plain and fname == "string.find" then
        steps = (ls + 1) * ((lp > 0 and lp <= ls) and lp or 1)
    else
        if lp > L.pattern then
            limit_error(fname, "pattern of " .. lp .. " bytes", L.pattern, 3)
        end
        if type(p) == "number" then p = tostring(p) end
        local pr = profile_of(p, fname ~= "string.gmatch")
        if fname == "string.find" and pr.plain then
            steps = (ls + 1) * ((lp > 0 and lp <= ls) and lp or 1)
        else
            steps = S.pattern_steps(fname, p, ls, maxn)
        end
    end
    if extra == 0 then extra = nil end
    steps = steps + (extra or 0)
    local cost = steps * BYTES_PER_STEP / 32 -- in instructions
    -- (below 1024 instructions the refusal is not worth a call: a budget
    -- that small is spent by the charge instead)
    local b = cost > 1024 and budget() or huge
    if b ~= huge and (steps > L.steps or cost > b) then
        error(fname .. (extra and ": pattern and replacement" or ": pattern")
            .. " too costly: up to " .. num(steps)
            .. " steps on a " .. ls .. "-byte subject, over the "
            .. (steps > L.steps
                and ("sandbox limit of " .. num(L.steps) .. " steps per call")
                or ("call's budget of " .. num(b) .. " instructions (it would "
                    .. "cost " .. num(cost) .. ")"))
            .. "; simplify the pattern or shorten the subject", 3)
    end
    charge(steps * BYTES_PER_STEP)
end

-- .................................................... the string library

local function safe_string(str)
    local s = {}
    for _, name in pairs(S.allowed.string) do s[name] = str[name] end
    -- (named as the library names them: C's argument errors use the name
    -- of the variable the function was called through)
    local rep, find_, match, gmatch, gsub_, byte_, format, pack, packsize,
    unpack = str.rep, str.find, str.match, str.gmatch, str.gsub, str.byte,
        str.format, str.pack, str.packsize, str.unpack
    local L = S.limits

    -- rep runs its copy loop n times even when it copies nothing
    -- (string.rep("", math.maxinteger)): the count is capped as well as
    -- the result, and charged as a matcher step per repetition (2 ns
    -- each, measured; the bytes copied are charged as allocated).
    s.rep = function(v, n, sep)
        local lv, cnt = slen(v), tonumber(n)
        if lv and cnt and cnt > 0 then
            local len = lv * cnt
            local lsep = slen(sep)
            if lsep then len = len + lsep * (cnt - 1) end
            if len > L.rep then
                limit_error("string.rep", "result of " .. num(floor(len))
                    .. " bytes", L.rep, 2)
            elseif cnt > L.rep then
                limit_error("string.rep", "count of " .. num(cnt), L.rep, 2)
            end
            charge(cnt * BYTES_PER_STEP)
        end
        return rep(v, n, sep)
    end
    s.find = function(v, p, init, plain)
        check_match("string.find", v, p, plain)
        return find_(v, p, init, plain)
    end
    s.match = function(v, p, init)
        check_match("string.match", v, p)
        return match(v, p, init)
    end
    -- Called again after it has returned nil, the C iterator scans the
    -- rest of the subject again: it is not called again, so the whole
    -- iteration is the one search charged here.
    s.gmatch = function(v, p, init)
        check_match("string.gmatch", v, p)
        local it, done = gmatch(v, p, init), false
        local function step(a, ...)
            if a == nil then done = true end
            return a, ...
        end
        return function()
            if done then return nil end
            return step(it())
        end
    end
    -- A string replacement is scanned once per match.
    s.gsub = function(v, p, r, n)
        local maxn = n ~= nil and tointeger(n) or nil
        local ls, lr = slen(v), slen(r)
        local extra = 0
        if ls and lr and lr > 0 then
            local matches = ls + 1
            if maxn and maxn < matches then matches = maxn > 0 and maxn or 0 end
            extra = matches * lr / BYTES_PER_STEP
        end
        check_match("string.gsub", v, p, false, maxn, extra)
        return gsub_(v, p, r, n)
    end
    -- byte pushes one value per byte of the slice.
    s.byte = function(v, i, j)
        local l = slen(v)
        if l and l > 64 then -- (at most 64 values: not worth counting)
            local pi = i == nil and 1 or tointeger(i)
            local pj = j == nil and pi or tointeger(j)
            if pi and pj then
                if pi <= 0 then pi = (pi == 0 or pi < -l) and 1 or l + pi + 1 end
                if pj > l then
                    pj = l
                elseif pj < 0 then
                    pj = pj < -l and 0 or l + pj + 1
                end
                local cnt = pj - pi + 1
                if cnt > L.results then
                    limit_error("string.byte", num(cnt) .. " results", L.results, 2, true)
                end
                if cnt > 0 then charge(cnt * BYTES_PER_VALUE) end
            end
        end
        return byte_(v, i, j)
    end
    -- format, pack and packsize scan their format once; unpack too, and
    -- returns up to one value per byte of it (and may scan the data).
    s.format = function(fmt, ...)
        charge(slen(fmt) or 0)
        return format(fmt, ...)
    end
    -- A fixed-size format may ask for any size ("c1000000000" pads it
    -- byte by byte): its size is capped as string.rep's result.
    s.pack = function(fmt, ...)
        local l = slen(fmt)
        if l then
            charge(l)
            local ok, size = pcall(packsize, fmt)
            if ok and size > L.rep then
                limit_error("string.pack", "result of " .. num(size) .. " bytes",
                    L.rep, 2)
            end
        end
        return pack(fmt, ...)
    end
    s.packsize = function(fmt)
        charge(slen(fmt) or 0)
        return packsize(fmt)
    end
    s.unpack = function(fmt, data, pos)
        local l = slen(fmt)
        if l then
            if l >= L.results then
                limit_error("string.unpack", "format of " .. l .. " bytes",
                    L.results - 1, 2)
            end
            charge(l + (slen(data) or 0))
        end
        return unpack(fmt, data, pos)
    end
    return s
end

-- ..................................................... the table library

-- luaL_checkinteger as Lua code: the integer, or an error worded as C's,
-- raised at `level` (1: the caller of checkint).
local function checkint(v, arg, fname, level)
    local i = tointeger(v)
    if i then return i end
    local why = (type(v) == "number" or (type(v) == "string" and tonumber(v)))
        and "number has no integer representation"
        or ("number expected, got " .. (v == nil and "no value" or type(v)))
    error("bad argument #" .. arg .. " to '" .. fname .. "' (" .. why .. ")",
        level + 1)
end

local function len_of(t, level)
    local n = tointeger(#t)
    if n then return n end
    error("object length is not an integer", level + 1)
end

local function safe_table(tab, getinfo)
    local t = {}
    for _, name in pairs(S.allowed.table) do t[name] = tab[name] end
    local insert, remove, move, concat_, unpack, sort_ = tab.insert,
        tab.remove, tab.move, tab.concat, tab.unpack, tab.sort
    local L = S.limits

    -- insert, remove and move shift elements one at a time through the
    -- table's metamethods, as many times as #t or the range says (a __len
    -- may answer math.maxinteger, or change its answer between a check
    -- and the C call; table.move({}, 1, 2^40, 2) moves nils): redone here
    -- in Lua, where the hook counts every element. Same results and
    -- errors as ltablib.c; a non-table goes to C for its argument error.
    t.insert = function(tb, ...)
        if type(tb) ~= "table" then return insert(tb, ...) end
        local nargs = select("#", ...)
        local e = len_of(tb, 2) + 1
        if nargs == 1 then
            tb[e] = ...
            return
        elseif nargs ~= 2 then
            error("wrong number of arguments to 'insert'", 2)
        end
        local pos, v = ...
        pos = checkint(pos, 2, "insert", 2)
        if not ult(pos - 1, e) then
            error("bad argument #2 to 'insert' (position out of bounds)", 2)
        end
        for i = e, pos + 1, -1 do tb[i] = tb[i - 1] end
        tb[pos] = v
    end
    t.remove = function(tb, ...)
        if type(tb) ~= "table" then return remove(tb, ...) end
        local size = len_of(tb, 2)
        local pos = ...
        if pos == nil then
            pos = size
        else
            pos = checkint(pos, 2, "remove", 2)
            if pos ~= size and ult(size, pos - 1) then
                error("bad argument #1 to 'remove' (position out of bounds)", 2)
            end
        end
        local v = tb[pos]
        for i = pos, size - 1 do tb[i] = tb[i + 1] end
        if pos < size then pos = size end
        tb[pos] = nil
        return v
    end
    t.move = function(a1, f, e, d, a2)
        f = checkint(f, 2, "move", 2)
        e = checkint(e, 3, "move", 2)
        d = checkint(d, 4, "move", 2)
        local to = a2 == nil and a1 or a2
        if type(a1) ~= "table" or type(to) ~= "table" then
            return move(a1, f, e, d, a2)
        end
        if e >= f then
            if not (f > 0 or e < maxinteger + f) then
                error("bad argument #3 to 'move' (too many elements to move)", 2)
            end
            local n = e - f + 1
            if d > maxinteger - n + 1 then
                error("bad argument #4 to 'move' (destination wrap around)", 2)
            end
            if d > e or d <= f or (a2 ~= nil and not (a1 == a2)) then
                for i = 0, n - 1 do to[d + i] = a1[f + i] end
            else
                for i = n - 1, 0, -1 do to[d + i] = a1[f + i] end
            end
        end
        return to
    end

    -- concat and unpack get explicit bounds, so the range C loops over is
    -- the one checked here (C does not ask __len for it again); one step
    -- per element is charged first.
    t.concat = function(tb, sep, i, j)
        if type(tb) ~= "table" then return concat_(tb, sep, i, j) end
        i = i == nil and 1 or checkint(i, 3, "concat", 2)
        if j == nil then j = len_of(tb, 2) else j = checkint(j, 4, "concat", 2) end
        if j >= i then charge(((j + 0.0) - i + 1) * BYTES_PER_VALUE) end
        return concat_(tb, sep, i, j)
    end
    t.unpack = function(tb, i, j)
        i = i == nil and 1 or checkint(i, 2, "unpack", 2)
        if j == nil then j = len_of(tb, 2) else j = checkint(j, 3, "unpack", 2) end
        if j >= i then
            local n = (j + 0.0) - i + 1
            if n > L.results then
                limit_error("table.unpack", num(n) .. " results", L.results, 2, true)
            end
            charge(n * BYTES_PER_VALUE)
        end
        return unpack(tb, i, j)
    end
    -- sort compares in C between its reads and writes: with a comparator
    -- written in Lua every comparison runs VM instructions, so the hook
    -- keeps counting however long the array (#t via __len) and whatever
    -- its values (long strings compare in one instruction: see the wall
    -- clock). A C function given as comparator is called from Lua too.
    local function lt(a, b)
        -- two strings compare byte by byte in one instruction: charged
        if type(a) == "string" and type(b) == "string" then
            local n = #a
            if n > 64 then charge(n) end
        end
        return a < b
    end
    t.sort = function(tb, comp)
        if comp == nil then
            comp = lt
        elseif type(comp) == "function" and getinfo(comp, "S").what == "C" then
            local c = comp
            comp = function(a, b) return c(a, b) end
        end
        return sort_(tb, comp)
    end
    return t
end

-- ...................................................... the utf8 library

local function safe_utf8(u8)
    local u = {}
    for _, name in pairs(S.allowed.utf8) do u[name] = u8[name] end
    local len, offset, codepoint, codes = u8.len, u8.offset, u8.codepoint,
        u8.codes
    local L = S.limits
    -- len and offset scan the string once.
    u.len = function(s, ...)
        charge(slen(s) or 0)
        return len(s, ...)
    end
    u.offset = function(s, ...)
        charge(slen(s) or 0)
        return offset(s, ...)
    end
    -- codepoint pushes one value per character of the slice.
    u.codepoint = function(s, i, j, lax)
        local l = slen(s)
        if l then
            local pi = i == nil and 1 or tointeger(i)
            if pi and pi < 0 then pi = pi < -l and 0 or l + pi + 1 end
            local pj = j == nil and pi or tointeger(j)
            if pj and pj < 0 then pj = pj < -l and 0 or l + pj + 1 end
            if pi and pj and pi >= 1 and pj <= l and pj >= pi then
                local cnt = pj - pi + 1
                if cnt > L.results then
                    limit_error("utf8.codepoint", "slice of " .. num(cnt)
                        .. " bytes", L.results, 2)
                end
                charge(cnt * BYTES_PER_VALUE)
            end
        end
        return codepoint(s, i, j, lax)
    end
    -- A step of the C iterator skips continuation bytes from the position
    -- it is given: linear over a whole loop, but a policy may call it with
    -- any position. Charged: the string once; a call off the loop's own
    -- sequence (another string or position), that string again. Not
    -- called again after the end.
    u.codes = function(s, lax)
        local it, st, ctl = codes(s, lax)
        charge(#st)
        local last, done = ctl, false
        local function step(p, c)
            if p == nil then
                done = true
                return
            end
            last = p
            return p, c
        end
        return function(s2, i)
            if done then return end
            if not (rawequal(s2, st) and i == last) then
                charge(slen(s2) or 0)
            end
            return step(it(s2, i))
        end, st, ctl
    end
    return u
end

-- Points the string metatable at the capped functions, so ("x"):rep(n) is
-- capped too. lock: also set __metatable, so getmetatable("") gives a
-- string and the metatable cannot be reached (the service does; busted
-- specs do not, to leave busted's own string handling alone).
function S.protect_strings(safe, lock)
    local mt = getmetatable("")
    mt.__index = safe
    if lock then mt.__metatable = "locked" end
end

-- --------------------------------------------------------------- library

local function sorted_keys(t)
    local ks = {}
    for k in pairs(t) do ks[#ks + 1] = k end
    sort(ks, function(a, b) return tostring(a) < tostring(b) end)
    return ks
end

local function undefined(_, k, level)
    local why = S.denied[k]
    error("undefined global '" .. tostring(k) .. "'"
        .. (why and " (not available in policies: " .. why .. ")" or ""),
        level or 2)
end

--- The shared part of every policy environment, built from G (the real
--- globals), opts.log (function(msg)), opts.now (function: the running
--- decision's ctx.now, or nil), opts.limit_hit (function: true
--- once the running call hit a limit), opts.charge (function(bytes): work
--- done in C, added to the instruction budget) and opts.budget
--- (function: the running call's instruction budget). Returns lib (name ->
--- value; a miss errors naming the global), register(name, module), which
--- offers a module to `require` (and as a global when name has no dot),
--- and the string table the string metatable should use.
function S.library(G, opts)
    local log = opts.log
    if opts.charge then charge = opts.charge end
    if opts.budget then budget = opts.budget end
    local lib, modules = {}, {}
    for _, name in pairs(S.allowed.base) do lib[name] = G[name] end
    local str = safe_string(G.string)
    S.safe_string_table = str
    lib.string = frozen(str)
    lib.table = frozen(safe_table(G.table, G.debug.getinfo))
    lib.utf8 = frozen(safe_utf8(G.utf8))
    local m = {}
    for _, name in pairs(S.allowed.math) do m[name] = G.math[name] end
    lib.math = frozen(m)
    local os, date, time = {}, G.os.date, G.os.time
    for _, name in pairs(S.allowed.os) do os[name] = G.os[name] end
    -- Decisions are deterministic (DESIGN §5): inside one, the current
    -- time is ctx.now (opts.now answers it; nil outside a decision).
    local now = opts.now or function() return nil end
    os.time = function(t)
        if t == nil then
            local n = now()
            if n ~= nil then return n end
        end
        return time(t)
    end
    -- date runs strftime once per conversion of its format
    os.date = function(fmt, t)
        charge(slen(fmt) or 0)
        if t == nil then t = now() end
        return date(fmt, t)
    end
    lib.os = frozen(os)
    -- tonumber scans its string (strtod, or the digits in a base)
    lib.tonumber = function(v, base)
        if type(v) == "string" then charge(#v) end
        return tonumber(v, base) -- (named so in C's argument errors)
    end
    lib.print = function(...)
        local n = select("#", ...)
        local parts = { ... }
        for i = 1, n do parts[i] = tostring(parts[i]) end
        log(concat(parts, "\t", 1, n))
    end
    lib.collectgarbage = function(opt)
        if opt ~= "count" then
            error("collectgarbage: only \"count\" is available in policies", 2)
        end
        return G.collectgarbage("count")
    end
    -- A limit error is raised from inside the count hook, where Lua runs
    -- the message handler with hooks off: a handler of the policy's would
    -- run unbounded. Once a limit is hit the handler is skipped.
    local real_xpcall, limit_hit = G.xpcall, opts.limit_hit
    lib.xpcall = function(f, handler, ...)
        return real_xpcall(f, function(e)
            if limit_hit() then return e end
            return handler(e)
        end, ...)
    end
    lib.setmetatable = function(t, mt)
        -- a finalizer would run whenever the collector runs, outside any
        -- call and its limits
        if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
            error("setmetatable: __gc is not available in policies", 2)
        end
        return setmetatable(t, mt)
    end
    lib.require = function(name)
        local m = modules[name]
        if m == nil then
            error("module '" .. tostring(name) .. "' not available: policies "
                .. "may require only the bundled calsync modules", 2)
        end
        return m
    end
    lib.load = function(chunk, name, mode, env)
        if mode ~= nil and mode ~= "t" then
            error("load: only text chunks (mode \"t\") are allowed", 2)
        end
        -- Compiling is C work linear in the text: charged per byte, and
        -- per piece a reader function returns.
        if type(chunk) == "string" then
            charge(#chunk * BYTES_PER_SOURCE_BYTE)
        elseif type(chunk) == "function" then
            local reader = chunk
            chunk = function()
                local piece = reader()
                if type(piece) == "string" then
                    charge(#piece * BYTES_PER_SOURCE_BYTE)
                end
                return piece
            end
        end
        -- never the real globals: S.new_env passes the policy's env
        return load(chunk, name, "t", env or {})
    end
    setmetatable(lib, { __index = undefined })
    local function register(name, m)
        local p = readonly(m)
        modules[name] = p
        if not find(name, ".", 1, true) then rawset(lib, name, p) end
    end
    return lib, register, str
end

-- ----------------------------------------------------------- environments

local env_state = setmetatable({}, { __mode = "k" }) -- env -> {lib, load}

--- A fresh environment over lib. Globals the chunk defines while it loads
--- are kept; after S.lock they are read-only.
function S.new_env(lib)
    local env = {}
    local st = { lib = lib }
    env_state[env] = st
    -- `load` without an env gets this environment, not the real globals
    st.load = function(chunk, name, mode, e)
        return lib.load(chunk, name, mode, e == nil and env or e)
    end
    -- kept in st so S.lock can change it: __metatable keeps the policy out
    st.mt = {
        __index = function(_, k)
            if k == "load" then return st.load end
            local v = rawget(lib, k)
            if v == nil then undefined(nil, k, 3) end
            return v
        end,
        __metatable = "locked",
    }
    return setmetatable(env, st.mt)
end

--- Locks env: from now on reading an unknown global errors and assigning
--- any global errors; the chunk's own globals become read-only (tables
--- deeply), so one call cannot leave state for the next through them.
function S.lock(env)
    local st = env_state[env]
    local all = {}
    for k, v in pairs(st.lib) do all[k] = v end
    all.load = st.load
    for _, k in pairs(sorted_keys(env)) do
        local v = rawget(env, k)
        if type(v) == "table" then v = readonly(v) end
        all[k] = v
        rawset(env, k, nil)
    end
    setmetatable(all, { __index = undefined })
    st.mt.__index = all
    st.mt.__newindex = function(_, k)
        error("cannot assign global '" .. tostring(k) .. "': globals are "
            .. "read-only once the policy has loaded (use a local)", 2)
    end
end

-- ------------------------------------------------------------- load check

local order = { "on_delete", "on_time_change", "on_title_change",
    "on_instance", "on_past", "on_response" }

--- Checks what a policy chunk returned. Returns a fresh table of its hooks
--- (only functions, only known names), or nil and "file:line: message".
--- name: the file as shown in messages; last_line: the line a message
--- about the whole table points at (the file's last line); getinfo:
--- debug.getinfo, for the line of a misnamed hook.
function S.check(t, name, last_line, getinfo)
    local function at(line) return name .. ":" .. (line or last_line) .. ": " end
    if type(t) ~= "table" then
        return nil, at() .. "policy must return a table of hooks, got "
            .. type(t)
    end
    for _, k in pairs(sorted_keys(t)) do
        local v = rawget(t, k)
        if type(k) == "string" and sub(k, 1, 3) == "on_" then
            local line
            if type(v) == "function" and getinfo then
                line = getinfo(v, "S").linedefined
                if line <= 0 then line = nil end
            end
            if not S.HOOKS[k] then
                return nil, at(line) .. "unknown hook '" .. k .. "' (hooks are "
                    .. concat(order, ", ") .. ")"
            elseif type(v) ~= "function" then
                return nil, at(line) .. "hook '" .. k .. "' must be a function, "
                    .. "got " .. type(v)
            end
        end
    end
    local hooks = {}
    for _, k in pairs(order) do hooks[k] = rawget(t, k) end
    local schema = rawget(t, "settings")
    if schema ~= nil then
        local plain, err = S.check_schema(schema)
        if not plain then return nil, at() .. err end
        hooks.settings = plain
    end
    return hooks
end

-- ------------------------------------------------------------ settings
-- DESIGN §5: `settings = { key = {type = "number"|"string"|"boolean",
-- default = .., min = .., max = .., one_of = {..}} }`.

local SCHEMA_TYPES = { number = true, string = true, boolean = true }
local SCHEMA_FIELDS = { type = true, default = true, min = true, max = true,
    one_of = true }
S.SETTINGS_MAX_KEYS = 64

-- Checks value v against one key's spec; nil, or what is wrong with it.
local function check_value(spec, v)
    if type(v) ~= spec.type then
        return "must be a " .. spec.type .. ", got " .. type(v)
    end
    if spec.type == "number" and v ~= v then return "must be a number, got NaN" end
    if spec.min ~= nil and v < spec.min then
        return "must be at least " .. tostring(spec.min) .. ", got " .. tostring(v)
    end
    if spec.max ~= nil and v > spec.max then
        return "must be at most " .. tostring(spec.max) .. ", got " .. tostring(v)
    end
    if spec.one_of ~= nil then
        for i = 1, #spec.one_of do
            if spec.one_of[i] == v then return nil end
        end
        local shown = {}
        for i = 1, #spec.one_of do shown[i] = sformat("%q", spec.one_of[i]) end
        return "must be one of " .. concat(shown, ", ") .. ", got " .. sformat("%q", v)
    end
    return nil
end

--- Checks a policy's `settings` schema; returns a plain copy of it
--- (key -> {type, default, min, max, one_of}) or nil and a message.
function S.check_schema(schema)
    if type(schema) ~= "table" then
        return nil, "settings must be a table (a schema), got " .. type(schema)
    end
    local out, n = {}, 0
    for _, key in pairs(sorted_keys(schema)) do
        local spec = rawget(schema, key)
        local where = "settings." .. tostring(key)
        if type(key) ~= "string" or not find(key, "^[%a_][%w_]*$") or #key > 64 then
            return nil, "settings: a key must be a name, got " .. tostring(key)
        end
        n = n + 1
        if n > S.SETTINGS_MAX_KEYS then
            return nil, "settings: more than " .. S.SETTINGS_MAX_KEYS .. " keys"
        end
        if type(spec) ~= "table" then
            return nil, where .. " must be a table {type = ...}, got " .. type(spec)
        end
        for _, f in pairs(sorted_keys(spec)) do
            if not SCHEMA_FIELDS[f] then
                return nil, where .. ": unknown field '" .. tostring(f)
                    .. "' (type, default, min, max, one_of)"
            end
        end
        local c = { type = rawget(spec, "type"), default = rawget(spec, "default"),
            min = rawget(spec, "min"), max = rawget(spec, "max") }
        if not SCHEMA_TYPES[c.type] then
            return nil, where .. ".type must be \"number\", \"string\" or \"boolean\", got "
                .. tostring(c.type)
        end
        if (c.min ~= nil or c.max ~= nil) and c.type ~= "number" then
            return nil, where .. ": min and max are for numbers"
        end
        if (c.min ~= nil and type(c.min) ~= "number") or (c.max ~= nil and type(c.max) ~= "number") then
            return nil, where .. ": min and max must be numbers"
        end
        local one_of = rawget(spec, "one_of")
        if one_of ~= nil then
            if type(one_of) ~= "table" or #one_of == 0 or #one_of > 64 then
                return nil, where .. ".one_of must be a list of 1 to 64 values"
            end
            c.one_of = {}
            for i = 1, #one_of do
                local v = rawget(one_of, i)
                if type(v) ~= c.type then
                    return nil, where .. ".one_of: every value must be a " .. c.type
                end
                c.one_of[i] = v
            end
        end
        if c.default ~= nil then
            local err = check_value(c, c.default)
            if err then return nil, where .. ".default " .. err end
        end
        out[key] = c
    end
    return out
end

--- Checks a calendar's settings (a decoded JSON object) against a plain
--- schema; nil, or "settings.key: message" naming the first bad key.
function S.validate_settings(schema, settings)
    if type(settings) ~= "table" then return "settings must be an object" end
    for _, key in pairs(sorted_keys(settings)) do
        local spec = type(key) == "string" and schema[key]
        if not spec then
            local known = sorted_keys(schema)
            return "settings." .. tostring(key) .. ": unknown setting"
                .. (#known > 0 and " (this policy takes " .. concat(known, ", ") .. ")"
                    or " (this policy takes none)")
        end
        local err = check_value(spec, settings[key])
        if err then return "settings." .. key .. ": " .. err end
    end
    return nil
end

--- Fills the defaults of a plain schema into a decoded settings table
--- (before it is made read-only): keys absent get their default.
function S.fill_defaults(schema, settings)
    for key, spec in pairs(schema) do
        if spec.default ~= nil and rawget(settings, key) == nil then
            rawset(settings, key, spec.default)
        end
    end
    return settings
end

-- ------------------------------------------------------------------ lint

-- Lua tokens of src: calls tok(kind, text, line) with kind "name",
-- "string", "number" or "op" (comments and whitespace skipped). Long
-- strings and comments of any level are skipped whole. Malformed text is
-- not this function's concern: the source has compiled already.
local function tokens(src, tok)
    local i, n, line = 1, #src, 1
    local function long_close(at)
        -- at: the first '[' of "[==[" ; returns the index after "]==]"
        local _, e, eq = find(src, "^%[(=*)%[", at)
        if not e then return nil end
        local _, ce = find(src, "%]" .. eq .. "%]", e + 1)
        ce = ce or n
        local _, nl = gsub(sub(src, at, ce), "\n", "")
        line = line + nl
        return ce + 1
    end
    while i <= n do
        local c = sub(src, i, i)
        if c == "\n" then
            line = line + 1
            i = i + 1
        elseif find(c, "^%s") then
            i = i + 1
        elseif sub(src, i, i + 1) == "--" then
            local j = sub(src, i + 2, i + 2) == "[" and long_close(i + 2)
            if j then
                i = j
            else
                local e = find(src, "\n", i, true)
                i = e or n + 1
            end
        elseif find(c, "^[%a_]") then
            local _, e = find(src, "^[%w_]*", i + 1)
            tok("name", sub(src, i, e), line)
            i = e + 1
        elseif find(c, "^%d") or (c == "." and find(src, "^%.%d", i)) then
            local _, e = find(src, "^[%w_%.]*", i)
            while find(sub(src, e, e), "^[eEpP]") and find(src, "^[+-]", e + 1) do
                _, e = find(src, "^[%w_%.]*", e + 2)
            end
            tok("number", sub(src, i, e), line)
            i = e + 1
        elseif c == "\"" or c == "'" then
            local j, start = i + 1, line
            while j <= n do
                local d = sub(src, j, j)
                if d == "\\" then
                    if sub(src, j + 1, j + 1) == "\n" then line = line + 1 end
                    j = j + 2
                elseif d == c then
                    break
                else
                    if d == "\n" then line = line + 1 end
                    j = j + 1
                end
            end
            tok("string", sub(src, i + 1, j - 1), start)
            i = j + 1
        elseif c == "[" and find(src, "^%[=*%[", i) then
            local start = line
            local j = long_close(i)
            tok("string", "", start)
            i = j
        else
            local three, two = sub(src, i, i + 2), sub(src, i, i + 1)
            if three == "..." then
                tok("op", three, line)
                i = i + 3
            elseif two == "==" or two == "~=" or two == "<=" or two == ">="
                or two == "::" or two == "//" or two == ".." or two == "<<"
                or two == ">>" then
                tok("op", two, line)
                i = i + 2
            else
                tok("op", c, line)
                i = i + 1
            end
        end
    end
end

--- What `calsync policy check` finds in the text of a policy that loads
--- (docs/policies.md, "policy check"): `calsync.NAME` where NAME is not in
--- `known` (the module's fields), and a table constructor with a literal
--- `action = "..."` but no `reason` key. Returns "file:line: message"
--- strings in source order. Text only: no code of the policy runs here.
function S.lint(src, name, known)
    local out = {}
    local stack = {}  -- open braces: {keys = {}, line, action}
    local pending_key -- a NAME '=' seen right after '{', ',' or ';'
    local hist = {}   -- the last three tokens {kind, text}, oldest first
    local function report(line, msg) out[#out + 1] = name .. ":" .. line .. ": " .. msg end
    tokens(src, function(kind, text, line)
        local a, b, c = hist[3], hist[2], hist[1]
        -- calsync.NAME, calsync not itself a field (x.calsync.y)
        if kind == "name" and a and a[2] == "." and a[1] == "op" and b
            and b[1] == "name" and b[2] == "calsync" then
            if not (c and c[1] == "op" and (c[2] == "." or c[2] == ":"))
                and not known[text] then
                report(line, "unknown calsync." .. text .. " (the calsync module has "
                    .. concat(sorted_keys(known), ", ") .. ")")
            end
        end
        -- table constructors
        if kind == "op" and text == "{" then
            stack[#stack + 1] = { keys = {}, line = line }
        elseif kind == "op" and text == "}" then
            local f = stack[#stack]
            stack[#stack] = nil
            if f and f.action and not f.keys.reason then
                report(f.action_line, "decision {action = \"" .. f.action
                    .. "\"} without a reason: the runtime turns it into flag")
            end
        elseif kind == "op" and text == "=" and a and a[1] == "name" and b
            and b[1] == "op" and (b[2] == "{" or b[2] == "," or b[2] == ";") then
            local f = stack[#stack]
            if f then
                f.keys[a[2]] = true
                pending_key = a[2]
            end
        elseif pending_key then
            local f = stack[#stack]
            if pending_key == "action" and kind == "string" and f and S.ACTIONS[text] then
                f.action, f.action_line = text, line
            end
            pending_key = nil
        end
        hist[1], hist[2], hist[3] = hist[2], hist[3], { kind, text }
    end)
    return out
end

return S
