-- calsync.sandbox -- the environment every policy runs in (DESIGN §5).
--
-- One builder for the service, `calsync policy check|test` and the busted
-- specs (spec/helpers.lua), so a policy that passes its specs cannot fail
-- live for a sandbox reason. src/sandbox.c runs this file with the state's
-- full globals; it is bundled but never offered to policies (`require`
-- only hands out the modules registered below, and this one never is).
--
-- The environment is built UP from an allowlist (S.allowed); the names left
-- out on purpose are listed with their reason in S.denied, so nobody re-adds
-- one by accident. What the runtime adds around this file, in C: the
-- instruction-count hook, the memory cap, the traceback handler.
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
local type, pairs, next, error, tostring, select, rawset, rawget,
setmetatable, getmetatable, load, sort, concat, sub, find, floor =
    type, pairs, next, error, tostring, select, rawset, rawget,
    setmetatable, getmetatable, load, table.sort, table.concat,
    string.sub, string.find, math.floor

-- ------------------------------------------------------------ allowlist

S.allowed = {
    base = { "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall",
        "select", "tonumber", "tostring", "type", "rawequal", "rawlen",
        "rawget", "setmetatable", "getmetatable", "_VERSION" },
    string = { "byte", "char", "format", "len", "lower", "upper", "reverse",
        "sub", "pack", "packsize", "unpack",
        -- capped wrappers (see S.limits): the hook cannot interrupt C code
        "rep", "find", "match", "gmatch", "gsub" },
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
    on_instance = true, on_past = true }

-- Caps of the string functions whose cost the instruction hook cannot see.
-- A pattern with k repetition items (*, +, -, %b) matched against n bytes
-- may take about n^(k+1) steps (n^k when anchored with "^"), times 2 per
-- "?": refused above S.limits.steps.
S.limits = {
    subject = 256 * 1024, -- bytes of a subject of find/match/gmatch/gsub
    pattern = 512,        -- bytes of a pattern
    rep = 1024 * 1024,    -- bytes of a string.rep result
    steps = 2 ^ 30,       -- estimated matcher steps
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

-- ---------------------------------------------------------- capped strings

-- Index just past the set starting at p[i] == "[".
local function skip_set(p, i)
    local j = i + 1
    if sub(p, j, j) == "^" then j = j + 1 end
    if sub(p, j, j) == "]" then j = j + 1 end
    local n = #p
    while j <= n do
        local c = sub(p, j, j)
        if c == "%" then
            j = j + 2
        elseif c == "]" then
            return j + 1
        else
            j = j + 1
        end
    end
    return j
end

-- Repetition items (*, +, -, %b) and optional items (?) of a pattern.
local function pattern_cost(p)
    local reps, opts, i, n = 0, 0, 1, #p
    if sub(p, 1, 1) == "^" then i = 2 end
    while i <= n do
        local c = sub(p, i, i)
        local single = true
        if c == "(" or c == ")" then
            i, single = i + 1, false
        elseif c == "%" then
            local d = sub(p, i + 1, i + 1)
            if d == "b" then
                i, single, reps = i + 4, false, reps + 1
            elseif d == "f" then
                i, single = skip_set(p, i + 2), false
            else
                i = i + 2
            end
        elseif c == "[" then
            i = skip_set(p, i)
        else
            i = i + 1
        end
        if single then
            local q = sub(p, i, i)
            if q == "*" or q == "+" or q == "-" then
                reps, i = reps + 1, i + 1
            elseif q == "?" then
                opts, i = opts + 1, i + 1
            end
        end
    end
    return reps, opts
end

local charge = function() end -- set by S.library: bytes of C work

local function check_match(fname, s, p, plain, anchored_ok)
    if type(s) ~= "string" and type(s) ~= "number" then return end -- Lua errs
    if type(p) ~= "string" and type(p) ~= "number" then return end
    s, p = tostring(s), tostring(p)
    charge(#s) -- the scan is work the instruction count cannot see
    local L = S.limits
    if #s > L.subject then
        error(fname .. ": subject of " .. #s .. " bytes exceeds the sandbox "
            .. "limit of " .. L.subject, 3)
    end
    if plain then return end
    if #p > L.pattern then
        error(fname .. ": pattern of " .. #p .. " bytes exceeds the sandbox "
            .. "limit of " .. L.pattern, 3)
    end
    local reps, opts = pattern_cost(p)
    local e = reps
    if not (anchored_ok and sub(p, 1, 1) == "^") then e = e + 1 end
    local cost = (#s + 1) ^ e * 2 ^ opts
    if cost > L.steps then
        error(fname .. ": pattern too costly for a " .. #s .. "-byte subject ("
            .. reps .. " repetitions; shorten the subject or simplify the "
            .. "pattern)", 3)
    end
end

local function safe_string(str)
    local s = {}
    for _, name in pairs(S.allowed.string) do s[name] = str[name] end
    local rep, sfind, match, gmatch, gsub =
        str.rep, str.find, str.match, str.gmatch, str.gsub
    s.rep = function(v, n, sep)
        if (type(v) == "string" or type(v) == "number")
            and type(n) == "number" and n > 0 then
            local len = #tostring(v) * n
            if sep ~= nil and (type(sep) == "string" or type(sep) == "number") then
                len = len + #tostring(sep) * (n - 1)
            end
            if len > S.limits.rep then
                error("string.rep: result of " .. floor(len) .. " bytes exceeds "
                    .. "the sandbox limit of " .. S.limits.rep, 2)
            end
        end
        return rep(v, n, sep)
    end
    s.find = function(v, p, init, plain)
        check_match("string.find", v, p, plain, true)
        return sfind(v, p, init, plain)
    end
    s.match = function(v, p, init)
        check_match("string.match", v, p, false, true)
        return match(v, p, init)
    end
    s.gmatch = function(v, p, init)
        check_match("string.gmatch", v, p, false, false)
        return gmatch(v, p, init)
    end
    s.gsub = function(v, p, r, n)
        check_match("string.gsub", v, p, false, true)
        return gsub(v, p, r, n)
    end
    return s
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
--- globals), opts.log (function(msg)), opts.limit_hit (function: true
--- once the running call hit a limit) and opts.charge (function(bytes):
--- work done in C, added to the instruction budget; optional). Returns lib (name -> value; a
--- miss errors naming the global) and register(name, module), which offers
--- a module to `require` (and as a global when name has no dot).
function S.library(G, opts)
    local log = opts.log
    if opts.charge then charge = opts.charge end
    local lib, modules = {}, {}
    for _, name in pairs(S.allowed.base) do lib[name] = G[name] end
    local str = safe_string(G.string)
    S.safe_string_table = str
    lib.string = frozen(str)
    for _, libname in pairs({ "table", "math", "utf8", "os" }) do
        local copy = {}
        for _, name in pairs(S.allowed[libname]) do
            copy[name] = G[libname][name]
        end
        lib[libname] = frozen(copy)
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
    local real_setmetatable = G.setmetatable
    lib.setmetatable = function(t, mt)
        -- a finalizer would run whenever the collector runs, outside any
        -- call and its limits
        if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
            error("setmetatable: __gc is not available in policies", 2)
        end
        return real_setmetatable(t, mt)
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
    "on_instance", "on_past" }

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
    return hooks
end

return S
