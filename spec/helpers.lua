-- spec/helpers.lua -- load policies the way calsync does, decide through
-- the calsync binary, and build the arguments the runtime passes, with
-- defaults. Installed by `make install` (PREFIX/share/calsync/lua), so a
-- repository holding only policies/ and spec/ runs its specs with busted
-- (docs/policies.md, "Specs outside calsync's tree").
--
--   local H = require "helpers"
--   local P = H.load("default")               -- policies/default.lua
--   local d = P.on_delete(H.change{kind = "delete"}, H.booking{}, H.ctx{})
--   local d = H.decide(P, change, booking, ctx) -- dispatch + validation
--
-- Policies load through lua/calsync/sandbox.lua, the same environment
-- builder src/policy/sandbox.c runs, with the same allowlist, read-only proxies,
-- locked globals, capped string functions and load check; the instruction
-- limit is applied with a count hook as in the service. Not reproduced
-- here: the memory cap (the runtime caps each state at policy_limits.memory).
local S = require "calsync.sandbox"

local H = {}

H.LIMIT = 1000000 -- policy_limits.instructions default
H.logs = {}       -- lines from print() and ctx.log(), oldest first

local function log(msg) H.logs[#H.logs + 1] = tostring(msg) end

local hit = false -- the running call hit the instruction limit
local used = 0    -- instructions counted by the hook in the running call
local charged = 0 -- bytes of C work charged by the sandbox's wrappers
local running = false
local hook

-- As src/policy/sandbox.c: a charge that spends the budget makes the very next
-- instruction raise, so a wrapper's charge stops the C call it precedes.
local function charge(n)
  if not running or n <= 0 then return end
  charged = charged + n
  if not hit and used + charged // 32 > H.LIMIT then debug.sethook(hook, "", 1) end
end

local function budget()
  if not running then return math.huge end
  return H.LIMIT
end

-- As the runtime (DESIGN §5, src/policy/sandbox.c sandbox_begin_decision):
-- inside a decision os.time() is ctx.now and math.random restarts from
-- (FNV-1a of the booking's uid, ctx.now).
local decision_now
local function seed_of(text)
  local h = 0xcbf29ce484222325
  for i = 1, #text do h = (h ~ text:byte(i)) * 0x100000001b3 end
  return h
end
H.seed_of = seed_of
local function begin_decision(booking, ctx)
  decision_now = ctx and ctx.now
  math.randomseed(seed_of(booking and booking.uid or ""), decision_now or 0)
end

local lib, register, str = S.library(_G, { log = log,
  now = function() return decision_now end,
  limit_hit = function() return hit end, charge = charge, budget = budget })

-- Bundled modules run in an environment of their own, as in the binary.
-- calsync.localtime is C in the binary (src/policy/tz.c reads the TZif
-- files). Under busted it is this stand-in: the same file, the same
-- answer for the instants the shipped specs use (transitions through
-- 2037; the binary also applies the file's POSIX footer beyond that, and
-- tests/unit/test_tz.c checks it against glibc over two centuries).
local zones = {}
local function tzif(zone)
  if zones[zone] then return zones[zone] end
  if type(zone) ~= "string" or #zone > 64 or zone:find("%.%.") or zone:find("^/")
      or not zone:find("^[%w_+/-]+$") then
    error("calsync.localtime: bad time zone name '" .. tostring(zone) .. "'", 3)
  end
  local f = io.open("/usr/share/zoneinfo/" .. zone, "rb")
  local data = f and f:read("a")
  if f then f:close() end
  if not data or data:sub(1, 4) ~= "TZif" then
    error("calsync.localtime: unknown time zone '" .. zone .. "'", 3)
  end
  local function header(pos)
    local isut, isstd, leap, timecnt, typecnt, charcnt = string.unpack(">I4I4I4I4I4I4", data, pos + 20)
    return pos + 44, isut, isstd, leap, timecnt, typecnt, charcnt
  end
  local pos, isut, isstd, leap, timecnt, typecnt, charcnt = header(1)
  pos = pos + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut
  pos, isut, isstd, leap, timecnt, typecnt, charcnt = header(pos)
  local z = { times = {}, idx = {}, off = {}, dst = {} }
  for i = 1, timecnt do z.times[i], pos = string.unpack(">i8", data, pos) end
  for i = 1, timecnt do z.idx[i], pos = string.unpack("B", data, pos) end
  for i = 0, typecnt - 1 do
    z.off[i], z.dst[i], pos = string.unpack(">i4B", data, pos)
    pos = pos + 1
  end
  zones[zone] = z
  return z
end

local function localtime(t, zone)
  if type(t) ~= "number" then
    error("calsync.localtime: expected epoch seconds, got " .. type(t), 2)
  end
  local z = tzif(zone)
  t = math.floor(t)
  local k = 0
  for i = 1, #z.times do if z.times[i] <= t then k = i else break end end
  local ty = k == 0 and 0 or z.idx[k]
  local off = z.off[ty]
  local c = H.calsync.clock(t, off // 60)
  c.sec = (t + off) % 60
  c.wday = c.wday % 7 + 1 -- ISO (Monday 1) to os.date's (Sunday 1)
  c.utc_offset, c.isdst = off, z.dst[ty] == 1
  return c
end

local function load_module(path, name, extra)
  local f = assert(loadfile(path, "t", S.new_env(lib)))
  local m = f()
  for k, v in pairs(extra or {}) do m[k] = v end
  register(name, m)
end
-- found on package.path: lua/ in the source tree, or where `make install`
-- puts the library (PREFIX/share/calsync/lua) for a policies repository
load_module(assert(package.searchpath("calsync", package.path)), "calsync",
  { localtime = localtime })
-- string methods ("x"):rep(n) get the capped functions, as live (the
-- metatable itself is not locked here, to leave busted's strings alone)
S.protect_strings(str, false)

H.calsync = require "calsync"

-- ------------------------------------------------------------ limits

-- As the runtime's message handler: an error located in a bundled module
-- (a wrapper of the sandbox, or a C function it called) is located at the
-- policy's line instead.
local function relocate(e)
  if type(e) ~= "string" or not string.find(e, "^lua/calsync/[^:]*:%d+: ") then
    return e
  end
  for level = 2, 200 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if string.find(info.source, "helpers%.lua$") then
      break -- out of the policy (a tail call left no line of it): none
    end
    if info.currentline > 0 and not string.find(info.source, "^@lua/calsync/") then
      return info.short_src .. ":" .. info.currentline .. ": "
        .. string.gsub(e, "^lua/calsync/[^:]*:%d+: ", "", 1)
    end
  end
  return (string.gsub(e, "^lua/calsync/[^:]*:%d+: ", "", 1))
end

-- Runs f(...) with the instruction limit armed; sticky like the runtime's:
-- once over budget every instruction raises, so pcall cannot swallow it.
local function limited(f, ...)
  used, charged, hit, running = 0, 0, false, true
  function hook()
    -- back in limited() itself: the call is over (the runtime's C side
    -- gets here without running an instruction)
    if debug.getinfo(2, "f").func == limited then
      debug.sethook()
      return
    end
    if not hit then
      used = used + 1000
      if used + charged // 32 <= H.LIMIT then return end
      hit = true
      debug.sethook(hook, "", 1)
    end
    error("instruction limit of " .. H.LIMIT .. " exceeded", 2)
  end
  debug.sethook(hook, "", 1000)
  local res = table.pack(xpcall(f, relocate, ...))
  debug.sethook()
  running = false
  if hit then return false, "instruction limit of " .. H.LIMIT .. " exceeded" end
  return table.unpack(res, 1, res.n)
end
H.limited = limited

-- ------------------------------------------------------------ loading

local function read(path)
  local f = assert(io.open(path, "rb"))
  local src = f:read("a")
  f:close()
  return src
end

local function last_line(src)
  local n, last = 1, 1
  for line in (src .. "\n"):gmatch("([^\n]*)\n") do
    if line:find("%S") then last = n end
    n = n + 1
  end
  return last
end

--- Loads a policy from source text; returns its hooks (wrapped so they
--- receive read-only arguments and run under the instruction limit), or
--- nil and "file:line: message" as `calsync policy check` prints it.
function H.load_source(src, name)
  name = name or "policies/test.lua"
  local env = S.new_env(lib)
  local chunk, err = load(src, "@" .. name, "t", env)
  if not chunk then return nil, err end
  math.randomseed(0, 0) -- as the runtime's fresh state: what a policy draws at load
  local ok, t = limited(chunk)
  if not ok then return nil, tostring(t) end
  S.lock(env)
  local hooks, cerr = S.check(t, name, last_line(src), debug.getinfo)
  if not hooks then return nil, cerr end
  local P = { source = src, name = name }
  for k, f in pairs(hooks) do
    P[k] = function(change, booking, ctx)
      if hooks.settings and ctx then
        -- as the runtime: ctx.settings with the schema's defaults filled in
        local c, st = {}, {}
        for key, v in pairs(ctx) do c[key] = v end
        for key, v in pairs(ctx.settings or {}) do st[key] = v end
        c.settings = S.fill_defaults(hooks.settings, st)
        ctx = c
      end
      begin_decision(booking, ctx)
      local ok2, d = limited(f, S.readonly(change), booking and S.readonly(booking),
        S.readonly(ctx))
      decision_now = nil
      if not ok2 then error(d, 0) end
      return d
    end
  end
  P.raw = hooks
  return P
end

--- Loads policies/<name>.lua (errors with the load message).
function H.load(name)
  local path = "policies/" .. name .. ".lua"
  local P, err = H.load_source(read(path), path)
  if not P then error(err, 2) end
  return P
end

-- ----------------------------------------------------------- dispatch

-- H.decide runs the binary's own dispatch, validation and fallback
-- (`calsync policy test`, src/policy/decide.c): one implementation, so a
-- spec cannot pass on a Lua copy that drifted from the runtime. The
-- binary: $CALSYNC_BIN, else build/calsync under the working directory
-- (the source tree), else `calsync` on PATH (an installed calsync, for a
-- policies repository of its own).
local cjson = require "cjson"

local function binary()
  local b = os.getenv("CALSYNC_BIN")
  if b and b ~= "" then return b end
  local f = io.open("build/calsync", "rb")
  if not f then return "calsync" end
  f:close()
  -- absolute: the binary runs in the scratch directory ($PWD may be stale)
  local p = assert(io.popen("pwd"))
  local cwd = p:read("l")
  p:close()
  return cwd .. "/build/calsync"
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local scratch -- a private directory: the policy, the change file, a config
local function scratch_dir()
  if not scratch then
    local p = assert(io.popen("mktemp -d /tmp/calsync-spec-XXXXXX"))
    scratch = p:read("l")
    p:close()
    assert(scratch and scratch ~= "", "mktemp -d failed")
    -- removed when the Lua state closes (busted exits through os.exit(rc, true))
    H._scratch_gc = setmetatable({}, { __gc = function()
      os.execute("rm -rf " .. shq(scratch))
    end })
  end
  return scratch
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A plain copy of an argument (proxies and functions left out), for JSON.
local function plain(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do
    if type(x) ~= "function" then t[k] = plain(x) end
  end
  return t
end

--- What the runtime decides: dispatch, validation, and flag with the
--- reason on an error, a limit hit or an invalid decision -- decided by
--- the calsync binary on the policy P was loaded from, with H.LIMIT
--- instructions per call. Returns the decision and, when the runtime
--- forced a flag, its kind ("runtime", "instructions", "memory",
--- "decision").
function H.decide(P, change, booking, ctx)
  local dir = scratch_dir()
  -- the policy under its own name, so messages read as in the service
  local name = P.name or "policies/test.lua"
  os.execute("mkdir -p " .. shq(dir .. "/" .. (name:match("^(.*)/") or ".")))
  write(dir .. "/" .. name, P.source)
  local doc = { change = plain(change), now = ctx.now,
    settings = plain(ctx.settings) or {},
    calendar_id = ctx.calendar and ctx.calendar.id or nil }
  if booking then doc.booking = plain(booking) end
  write(dir .. "/change.json", cjson.encode(doc))
  local limit = math.max(1000, math.min(H.LIMIT, 1e12))
  write(dir .. "/calsync.conf", string.format(
    "policy_limits = { instructions = %d }\n", math.floor(limit)))
  local cmd = "cd " .. shq(dir) .. " && " .. shq(binary()) .. " policy test -c calsync.conf "
    .. shq(name) .. " change.json 2>stderr.txt"
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  if out == "" then
    local f = io.open(dir .. "/stderr.txt", "rb")
    local err = f and f:read("a") or ""
    if f then f:close() end
    error("calsync policy test failed: " .. err, 2)
  end
  local d = cjson.decode(out)
  return { action = d.action, reason = d.reason }, d.error
end

-- ----------------------------------------------------------- builders
-- The shapes the runtime builds (src/policy/args.c push_change/push_booking/
-- push_ctx): times are RFC 3339 UTC strings, ctx.now integer seconds.

local function merge(defaults, over)
  local t = {}
  for k, v in pairs(defaults) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return t
end

H.NOW = H.calsync.time("2026-11-24T09:00:00Z")

--- The booking: the fields of GET /v1/bookings/{uid}.
function H.booking(over)
  return merge({
    uid = "bk-1",
    calendar_id = 1,
    title = "Intro call",
    start = "2026-11-26T10:00:00Z",
    ["end"] = "2026-11-26T10:30:00Z",
    status = "accepted",
    needs_review = false,
    event_id = "ev-1",
    updated_at = "2026-11-20T08:00:00Z",
  }, over)
end

--- A change. kind "delete" (default), "time_change" or "title_change";
--- `old` defaults to the default booking's span, `new` to a move by a day
--- (time_change) or a new title (title_change); `event` to what Google
--- sends for that kind.
function H.change(over)
  over = over or {}
  local kind = over.kind or "delete"
  local b = H.booking()
  local old = { start = b.start, ["end"] = b["end"], title = b.title }
  local new, event
  if kind == "delete" then
    event = { id = "ev-1", status = "cancelled" }
  elseif kind == "time_change" then
    new = { start = "2026-11-27T10:00:00Z", ["end"] = "2026-11-27T10:30:00Z", title = b.title }
  else
    new = { start = b.start, ["end"] = b["end"], title = "Renamed call" }
  end
  if new then
    local n = over.new or new
    event = { id = "ev-1", status = "confirmed", summary = n.title,
      start = { dateTime = n.start }, ["end"] = { dateTime = n["end"] } }
  end
  return merge({
    kind = kind,
    event = event,
    old = old,
    new = new,
    instance = nil,
    past = false,
    source = "push",
  }, over)
end

--- ctx: now (epoch seconds, default H.NOW), calendar {id}, settings, log.
function H.ctx(over)
  over = over or {}
  return {
    now = over.now or H.NOW,
    calendar = over.calendar or { id = 1 },
    settings = over.settings or {},
    log = log,
  }
end

return H
