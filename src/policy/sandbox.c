/* sandbox.c -- a capped lua_State for one policy.
 *
 * What it is for: running untrusted policy code with bounded instructions
 * and memory, in an environment built from an allowlist. The allowlist,
 * the read-only proxies, the capped string functions and the load check
 * live in the bundled lua/calsync/sandbox.lua (shared with the busted
 * specs); this file adds what Lua cannot do for itself:
 *
 *   - sb_alloc: a lua_Alloc with a byte cap per state ({used, limit, hit},
 *     as HAProxy's hlua_alloc). The cap is counted on top of the baseline
 *     the bare sandbox needs, so it measures the policy. Once hit, every
 *     growth is refused until the call ends (sticky), and the state is
 *     marked dead: the owner frees it and builds a new one.
 *   - sb_hook: a LUA_MASKCOUNT hook every SB_HOOK_STEP instructions. Past
 *     the budget it re-arms itself at count 1, so a policy's pcall cannot
 *     swallow the limit: the next instruction raises again.
 *   - sb_charge / sb_budget: the C work a wrapper of sandbox.lua is about
 *     to start, charged to the budget before it starts, and the budget (a
 *     pattern that could cost more than all of it is refused).
 *   - sb_traceback: the message handler of every protected call.
 *
 * Why every call ends (docs/internals/policy.md, "C work"): the hook
 * bounds what the VM runs, but not the time one instruction spends in a C
 * function. Every C function a policy can reach does O(1) work, or work
 * linear in a string or table that the memory cap bounds, or is wrapped in
 * sandbox.lua so that its work is bounded before it starts. So between two
 * hook calls there are at most SB_HOOK_STEP instructions, each of bounded
 * work, and the wall-clock check in the hook (SB_WALL_MS) is reached.
 *
 * Main objects: struct sandbox (one state), registry entries keyed by the
 * addresses of the static chars below.
 */
#include "policy/sandbox.h"
#include "policy/tz.h"

#include "bundle.h"
#include "log.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SB_HOOK_STEP 1000
#define SB_JSON_DEPTH 32
/* Work inside C functions is invisible to the count: bytes allocated and
 * bytes scanned by the pattern functions are charged to the instruction
 * budget, one instruction per SB_BYTES_PER_INSTR bytes (deterministic, so
 * a dry run still reproduces a live decision). */
#define SB_BYTES_PER_INSTR 32
/* Backstop for C work nothing can charge (comparing two long strings is
 * one VM instruction): a call that runs this long is stopped too. The
 * clock starts at the call's first hook (SB_HOOK_STEP instructions in), so
 * a call shorter than that never reads it. */
#define SB_WALL_MS 2000

struct sandbox {
    lua_State *L;
    char name[64];
    struct sandbox_limits lim;
    /* memory: the allocator's user data */
    size_t used, limit;
    int mem_hit;
    int mem_pending; /* the last growth was refused */
    /* instructions: the hook's per-call state */
    int64_t instr_used;
    int64_t bytes;      /* C work of this call: allocated + scanned bytes */
    int64_t deadline;   /* time_mono_ms() past which the call stops;
                         * 0 until the call's first hook */
    int running;        /* inside sandbox_pcall */
    int wall_hit;
    int instr_hit;
    int hook_step;
    int logs;   /* log lines in this call */
    int dead;   /* a call hit the memory cap */
    /* inside cjson's decode, which frees its scratch buffer only when it
     * returns or fails on the text: an allocation refused there would
     * unwind past it and leak it. So growth past the cap is granted there
     * (bounded by the decoded text, which the runtime supplies) and becomes
     * a hit as soon as decode returns (sandbox_push_json). */
    int decoding;
    int decode_over;
    int loaded; /* sandbox_load succeeded */
    /* the running decision's ctx.now (sandbox_begin_decision): os.time()
     * and os.date() without a time answer it */
    int64_t now;
    int has_now;
};

/* Registry keys: addresses nothing else can collide with. */
static char sb_key_readonly;
static char sb_key_new_env;
static char sb_key_lock;
static char sb_key_check;
static char sb_key_getinfo;
static char sb_key_lib;
static char sb_key_decode;
static char sb_key_hooks;
static char sb_key_index_name;  /* "__index" */
static char sb_key_stale_mt;  /* the metatable of a retired proxy */
static char sb_key_randomseed; /* the real math.randomseed */
static char sb_key_lint;       /* S.lint */
static char sb_key_validate;   /* S.validate_settings */
static char sb_key_defaults;   /* S.fill_defaults */
static char sb_key_calsync_keys; /* {name = true} of the calsync module */

static struct sandbox *sb_of(lua_State *L)
{
    return *(struct sandbox **)lua_getextraspace(L);
}

/* --------------------------------------------------------------- limits */

static void sb_hook(lua_State *L, lua_Debug *ar);

/* Bytes of C work just went past the budget: make the very next
 * instruction run the hook (lua_sethook may be called from anywhere). */
static void sb_check_bytes(struct sandbox *sb)
{
    if (sb->running && !sb->instr_hit &&
        sb->instr_used + sb->bytes / SB_BYTES_PER_INSTR > sb->lim.instructions)
        lua_sethook(sb->L, sb_hook, LUA_MASKCOUNT, 1);
}

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct sandbox *sb = ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        sb->used -= osize;
        return NULL;
    }
    if (nsize > osize && !sb->mem_hit && sb->decoding &&
        (sb->used > sb->limit || nsize - osize > sb->limit - sb->used)) {
        sb->decode_over = 1; /* granted below, a hit once decode returns */
    } else if (nsize > osize &&
               (sb->mem_hit || nsize - osize > sb->limit - sb->used)) {
        /* Lua answers a refusal with an emergency full collection and
         * one retry: only a refused retry is a hit (garbage is not the
         * policy's fault). From then on every growth is refused until
         * the call ends, so a policy's pcall cannot carry on. */
        if (sb->mem_pending)
            sb->mem_hit = 1;
        sb->mem_pending = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p) {
        if (nsize <= osize)
            return ptr; /* never fail a shrink: keep the larger block */
        sb->mem_hit = 1;
        return NULL;
    }
    if (nsize > osize) {
        sb->mem_pending = 0;
        if (sb->running) {
            sb->bytes += (int64_t)(nsize - osize);
            sb_check_bytes(sb);
        }
    }
    sb->used = sb->used - osize + nsize;
    return p;
}

/* Pushes "file:line: " of the innermost frame of policy code: the bundled
 * modules (the wrappers of sandbox.lua, the calsync module) are skipped,
 * so a limit hit inside a wrapper names the policy's line that called it. */
static void sb_where(lua_State *L)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar))
            break;
        if (ar.currentline > 0 && strncmp(ar.source, "@lua/calsync/", 13) != 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

static void sb_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct sandbox *sb = sb_of(L);
    if (!sb->instr_hit) {
        sb->instr_used += sb->hook_step;
        int64_t cost = sb->instr_used + sb->bytes / SB_BYTES_PER_INSTR;
        if (cost <= sb->lim.instructions) {
            int64_t now = time_mono_ms();
            if (sb->deadline == 0)
                sb->deadline = now + SB_WALL_MS;
            if (now < sb->deadline)
                return;
            sb->wall_hit = 1;
        }
        sb->instr_hit = 1;
        /* sticky: every further instruction raises again */
        lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1);
    }
    sb_where(L);
    if (sb->wall_hit)
        lua_pushfstring(L, "instruction limit: still running after %d ms",
                        SB_WALL_MS);
    else
        lua_pushfstring(L, "instruction limit of %I exceeded",
                        (lua_Integer)sb->lim.instructions);
    lua_concat(L, 2);
    lua_error(L);
}

/* Length of a leading "lua/calsync/<file>:<line>: " in msg, else 0. */
static size_t bundled_location(const char *msg)
{
    if (strncmp(msg, "lua/calsync/", 12) != 0)
        return 0;
    const char *p = strchr(msg + 12, ':');
    if (!p || p[1] < '0' || p[1] > '9')
        return 0;
    for (p++; *p >= '0' && *p <= '9'; p++)
        ;
    return p[0] == ':' && p[1] == ' ' ? (size_t)(p + 2 - msg) : 0;
}

/* The message handler. It runs where the error was raised, stack intact:
 * an error located in a bundled module (a wrapper of sandbox.lua, or a C
 * function it called: a C function's error names its caller) is located
 * at the policy's line instead, as if the policy had made the call. */
static int sb_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(L, 1));
    } else {
        size_t skip = bundled_location(msg);
        if (skip) {
            sb_where(L);
            lua_pushstring(L, msg + skip);
            lua_concat(L, 2);
            msg = lua_tostring(L, -1);
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ----------------------------------------------------------- Lua helpers */

static int sb_log(lua_State *L)
{
    struct sandbox *sb = sb_of(L);
    size_t len;
    const char *m = luaL_tolstring(L, 1, &len);
    sb->logs++;
    if (sb->logs <= SANDBOX_MAX_LOG_LINES) {
        if (sb->running) { /* log_q scans the whole message */
            sb->bytes += (int64_t)len;
            sb_check_bytes(sb);
        }
        log_info("policy.log", "policy=%s msg=%s", log_q(sb->name), log_q(m));
    }
    else if (sb->logs == SANDBOX_MAX_LOG_LINES + 1)
        log_warn("policy.log_suppressed", "policy=%s limit=%d", log_q(sb->name),
                 SANDBOX_MAX_LOG_LINES);
    return 0;
}

/* charge(n): n bytes of C work a wrapper of sandbox.lua is about to start
 * (any number: estimates are floats, and may be huge). Past the budget
 * the next instruction, the call of the C function, raises instead. */
static int sb_charge(lua_State *L)
{
    struct sandbox *sb = sb_of(L);
    lua_Number n = luaL_checknumber(L, 1);
    if (n > 0 && sb->running) {
        /* (n >= 2^62 is past any budget: saturate instead of overflowing) */
        sb->bytes += n < 4611686018427387904.0 ? (int64_t)n : INT64_MAX / 2;
        if (sb->bytes > INT64_MAX / 2)
            sb->bytes = INT64_MAX / 2;
        sb_check_bytes(sb);
    }
    return 0;
}

/* budget(): the running call's instruction budget (a pattern that could
 * cost more is refused outright), or math.huge outside a call. */
static int sb_budget(lua_State *L)
{
    struct sandbox *sb = sb_of(L);
    if (sb->running)
        lua_pushinteger(L, (lua_Integer)sb->lim.instructions);
    else
        lua_pushnumber(L, HUGE_VAL);
    return 1;
}

/* now(): the running decision's ctx.now, or nil outside a decision (a
 * load, a unit test's bare call): os.time() then reads the clock. */
static int sb_now(lua_State *L)
{
    struct sandbox *sb = sb_of(L);
    if (sb->running && sb->has_now)
        lua_pushinteger(L, (lua_Integer)sb->now);
    else
        lua_pushnil(L);
    return 1;
}

uint64_t sandbox_seed_of(const char *text)
{
    /* FNV-1a, 64 bits: spec/helpers.lua computes the same */
    uint64_t h = 0xcbf29ce484222325u;
    for (const unsigned char *p = (const unsigned char *)(text ? text : ""); *p; p++) {
        h ^= *p;
        h *= 0x100000001b3u;
    }
    return h;
}

void sandbox_begin_decision(lua_State *L, int64_t now_s, const char *seed_text)
{
    struct sandbox *sb = sb_of(L);
    sb->now = now_s;
    sb->has_now = 1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_randomseed);
    lua_pushinteger(L, (lua_Integer)sandbox_seed_of(seed_text));
    lua_pushinteger(L, (lua_Integer)now_s);
    lua_call(L, 2, 0);
}

/* Charged per calsync.localtime call, whatever the cache holds (charges
 * are deterministic): a binary search and a table of nine fields. */
#define SB_LOCALTIME_BYTES 512

/* Raises "calsync.localtime: <msg>" located at the caller (level 1: the
 * function that called this C function), as the Lua functions of the
 * calsync module do with error(msg, 2). */
static int localtime_error(lua_State *L, const char *msg)
{
    luaL_where(L, 1);
    lua_pushfstring(L, "calsync.localtime: %s", msg);
    lua_concat(L, 2);
    return lua_error(L);
}

/* calsync.localtime(t, zone): the wall clock of epoch seconds t in the
 * IANA zone, {year, month, day, hour, min, sec, wday (1 = Sunday), yday,
 * utc_offset (seconds), isdst}. The zone file is read by tz.c (never
 * through TZ, which is the whole process's). */
static int sb_localtime(lua_State *L)
{
    struct sandbox *sb = sb_of(L);
    if (lua_type(L, 1) != LUA_TNUMBER)
        return localtime_error(L, lua_pushfstring(L, "expected epoch seconds, got %s",
                                                  luaL_typename(L, 1)));
    if (lua_type(L, 2) != LUA_TSTRING)
        return localtime_error(L, lua_pushfstring(L, "expected a zone name such as "
                                                  "\"Europe/Berlin\", got %s",
                                                  luaL_typename(L, 2)));
    size_t zl;
    const char *zone = lua_tolstring(L, 2, &zl);
    if (sb->running) {
        sb->bytes += SB_LOCALTIME_BYTES + (int64_t)(zl < TZ_NAME_MAX ? zl : TZ_NAME_MAX);
        sb_check_bytes(sb);
    }
    lua_Integer t;
    if (!lua_isinteger(L, 1)) {
        lua_Number f = floor(lua_tonumber(L, 1));
        if (!(f >= -1e15 && f <= 1e15)) /* NaN and inf too */
            return localtime_error(L, "time out of range");
        t = (lua_Integer)f;
    } else {
        t = lua_tointeger(L, 1);
    }
    struct tz_local lt;
    char err[200];
    if (tz_localtime(zone, zl, (int64_t)t, &lt, err, sizeof err))
        return localtime_error(L, err);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, (lua_Integer)lt.year);
    lua_setfield(L, -2, "year");
    lua_pushinteger(L, lt.month);
    lua_setfield(L, -2, "month");
    lua_pushinteger(L, lt.day);
    lua_setfield(L, -2, "day");
    lua_pushinteger(L, lt.hour);
    lua_setfield(L, -2, "hour");
    lua_pushinteger(L, lt.min);
    lua_setfield(L, -2, "min");
    lua_pushinteger(L, lt.sec);
    lua_setfield(L, -2, "sec");
    lua_pushinteger(L, lt.wday);
    lua_setfield(L, -2, "wday");
    lua_pushinteger(L, lt.yday);
    lua_setfield(L, -2, "yday");
    lua_pushinteger(L, lt.utc_offset);
    lua_setfield(L, -2, "utc_offset");
    lua_pushboolean(L, lt.isdst);
    lua_setfield(L, -2, "isdst");
    return 1;
}

static int sb_limit_hit(lua_State *L)
{
    struct sandbox *sb = sb_of(L);
    lua_pushboolean(L, sb->instr_hit || sb->mem_hit);
    return 1;
}

void sandbox_push_log(lua_State *L)
{
    lua_pushcfunction(L, sb_log);
}

void sandbox_readonly(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_readonly);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
}

/* cjson gives JSON null as a light userdata and every number as a float:
 * drop the nulls (absent = nil for a policy) and turn integral numbers into
 * integers, so `24` reads as 24 and not 24.0, as in the busted specs. */
static void normalise_json(lua_State *L, int idx, int depth)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 4, "JSON too deep");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_islightuserdata(L, -1)) { /* cjson.null */
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, idx); /* clearing a field while traversing is allowed */
        } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number n = lua_tonumber(L, -1);
            lua_pop(L, 1);
            if (n >= -9007199254740992.0 && n <= 9007199254740992.0 &&
                n == (lua_Number)(lua_Integer)n) {
                lua_pushvalue(L, -1);
                lua_pushinteger(L, (lua_Integer)n);
                lua_rawset(L, idx); /* assigning an existing field is allowed */
            }
        } else if (lua_type(L, -1) == LUA_TTABLE && depth < SB_JSON_DEPTH + 2) {
            normalise_json(L, -1, depth + 1);
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
        }
    }
}

void sandbox_push_json(lua_State *L, const char *text, size_t len)
{
    struct sandbox *sb = sb_of(L);
    if (sb->mem_hit) /* every growth is refused: not inside decode */
        luaL_error(L, "not enough memory");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_decode);
    lua_pushlstring(L, text, len);
    sb->decoding = 1;
    int st = lua_pcall(L, 1, 1, 0);
    sb->decoding = 0;
    if (sb->decode_over) {
        /* past the cap while decoding: a hit, sticky as any other */
        sb->decode_over = 0;
        sb->mem_hit = 1;
        luaL_error(L, "not enough memory");
    }
    if (st != LUA_OK)
        lua_error(L);
    if (lua_type(L, -1) == LUA_TTABLE)
        normalise_json(L, -1, 0);
    else if (lua_islightuserdata(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

int sandbox_push_hook(lua_State *L, const char *name)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_hooks);
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_getfield(L, -1, name) != LUA_TFUNCTION) {
        lua_pop(L, 2);
        return 0;
    }
    lua_remove(L, -2);
    return 1;
}

/* ------------------------------------------------ building a new sandbox */

/* ---------------------------------------------- fast read-only proxies */

/* The same observable behaviour as S.readonly in sandbox.lua (which the
 * specs use), built in C for the argument tables of every call: the proxy
 * is an empty table whose metatable's __index is the target itself (no
 * function call per read), so nested tables must be proxies already. The
 * target never reaches policy code: not through __index (a table lookup),
 * not through pairs (the iterator's state is the proxy), not through
 * getmetatable (__metatable). args.c keeps the targets and metatables
 * of a state and refills them per call; a proxy handed to an earlier call
 * is retired (sandbox_proxy_retire) so it cannot show a later call's data. */

static int ro_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                      luaL_tolstring(L, 2, NULL));
}

static int ro_stale(lua_State *L)
{
    return luaL_error(L, "argument of an earlier call: arguments are valid only "
                      "during the call that received them (copy what you need "
                      "into locals)");
}

/* The target of proxy p: its metatable's __index (lua_getmetatable
 * ignores __metatable, so C reaches it; the policy cannot). */
static void ro_target(lua_State *L, int p)
{
    lua_getmetatable(L, p);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_index_name);
    lua_rawget(L, -2);
    lua_remove(L, -2);
}

static int ro_len(lua_State *L)
{
    ro_target(L, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

/* The iterator pairs() hands out: next over the target of proxy 1. Policy
 * code can call it with anything, so it checks that 1 is a live proxy. */
static int ro_next(lua_State *L)
{
    int live = 0;
    if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
        lua_pushliteral(L, "__newindex");
        lua_rawget(L, -2); /* raw: a policy's metatable may have one */
        lua_CFunction f = lua_tocfunction(L, -1);
        if (f == ro_stale)
            return ro_stale(L);
        live = f == ro_newindex;
    }
    if (!live)
        return luaL_argerror(L, 1, "not a read-only argument");
    lua_settop(L, 2);
    ro_target(L, 1);
    lua_pushvalue(L, 2);
    if (lua_next(L, 3))
        return 2;
    lua_pushnil(L);
    return 1;
}

static int ro_pairs(lua_State *L)
{
    ro_target(L, 1);
    int t = lua_gettop(L);
    /* fields made on first read (sandbox.h): make them all first */
    if (lua_getmetatable(L, t) && lua_getfield(L, -1, "__lazykeys") == LUA_TTABLE) {
        int keys = lua_gettop(L);
        for (lua_Integer i = 1; lua_rawgeti(L, keys, i) != LUA_TNIL; i++) {
            lua_gettable(L, t);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 1);
    lua_pushcfunction(L, ro_next); /* state: the proxy, never the target */
    lua_insert(L, 1);
    lua_pushnil(L);
    return 3;
}

void sandbox_proxy_mt(lua_State *L, int target)
{
    target = lua_absindex(L, target);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, target);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ro_newindex); /* light C functions: no allocation */
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, ro_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, ro_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
}

void sandbox_proxy(lua_State *L, int mt)
{
    mt = lua_absindex(L, mt);
    lua_createtable(L, 0, 0);
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

void sandbox_proxy_retire(lua_State *L, int t, int first, int last)
{
    t = lua_absindex(L, t);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_stale_mt);
    for (int i = first; i <= last; i++) {
        if (lua_rawgeti(L, t, i) == LUA_TTABLE) {
            lua_pushvalue(L, -2);
            lua_setmetatable(L, -2);
            lua_pushnil(L);
            lua_rawseti(L, t, i);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void get_field_to_registry(lua_State *L, int t, const char *field,
                                  const void *key)
{
    lua_getfield(L, t, field);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Runs protected: opens the libraries for trusted code, cjson, the bundled
 * calsync.sandbox and every other bundled module (in an environment of
 * their own, so they see what policies see). */
static int sb_setup(lua_State *L)
{
    luaL_openlibs(L);

    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    int cj = lua_gettop(L);
    lua_getfield(L, cj, "decode_max_depth");
    lua_pushinteger(L, SB_JSON_DEPTH);
    lua_call(L, 1, 0);
    lua_getfield(L, cj, "decode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    get_field_to_registry(L, cj, "decode", &sb_key_decode);
    lua_pop(L, 1);

    const struct bundle_file *bf = bundle_find("calsync.sandbox");
    if (!bf)
        return luaL_error(L, "calsync.sandbox is not bundled");
    if (luaL_loadbufferx(L, bf->src, bf->len, bf->chunk, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    int S = lua_gettop(L);
    get_field_to_registry(L, S, "readonly", &sb_key_readonly);
    get_field_to_registry(L, S, "new_env", &sb_key_new_env);
    get_field_to_registry(L, S, "lock", &sb_key_lock);
    get_field_to_registry(L, S, "check", &sb_key_check);
    get_field_to_registry(L, S, "lint", &sb_key_lint);
    get_field_to_registry(L, S, "validate_settings", &sb_key_validate);
    get_field_to_registry(L, S, "fill_defaults", &sb_key_defaults);
    lua_getglobal(L, "debug");
    get_field_to_registry(L, -1, "getinfo", &sb_key_getinfo);
    lua_pop(L, 1);
    /* Lua seeds math.random from the clock and an address: a fixed seed
     * makes what a policy draws while it loads the same on every load;
     * each decision reseeds (sandbox_begin_decision) */
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_key_randomseed);
    lua_pushinteger(L, 0);
    lua_pushinteger(L, 0);
    lua_call(L, 2, 0);
    lua_pop(L, 1);

    /* lib, register, str = S.library(_G, {log = sb_log, limit_hit = ...}) */
    lua_getfield(L, S, "library");
    lua_pushglobaltable(L);
    lua_createtable(L, 0, 5);
    lua_pushcfunction(L, sb_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, sb_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, sb_limit_hit);
    lua_setfield(L, -2, "limit_hit");
    lua_pushcfunction(L, sb_charge);
    lua_setfield(L, -2, "charge");
    lua_pushcfunction(L, sb_budget);
    lua_setfield(L, -2, "budget");
    lua_call(L, 2, 3);
    int lib = S + 1, reg = S + 2, str = S + 3;
    lua_pushvalue(L, lib);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_key_lib);

    for (const struct bundle_file *m = bundle_files; m->module; m++) {
        if (strcmp(m->module, "calsync.sandbox") == 0)
            continue; /* never reachable from policies */
        lua_pushvalue(L, reg);
        lua_pushstring(L, m->module);
        if (luaL_loadbufferx(L, m->src, m->len, m->chunk, "t") != LUA_OK)
            return lua_error(L);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_new_env);
        lua_pushvalue(L, lib);
        lua_call(L, 1, 1);
        lua_setupvalue(L, -2, 1); /* the chunk's _ENV */
        lua_call(L, 0, 1);
        if (strcmp(m->module, "calsync") == 0) {
            /* the C part of the module (before register freezes it) */
            lua_pushcfunction(L, sb_localtime);
            lua_setfield(L, -2, "localtime");
            /* its field names, for policy check's lint */
            lua_newtable(L);
            lua_pushnil(L);
            while (lua_next(L, -3)) {
                lua_pop(L, 1);
                lua_pushvalue(L, -1);
                lua_pushboolean(L, 1);
                lua_rawset(L, -4);
            }
            lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_key_calsync_keys);
        }
        lua_call(L, 2, 0);        /* register(name, module) */
    }

    lua_pushliteral(L, "__index");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_key_index_name);
    lua_createtable(L, 0, 5);
    static const char *const stale_events[] = {"__index", "__newindex", "__len",
                                               "__pairs", NULL};
    for (int i = 0; stale_events[i]; i++) {
        lua_pushcfunction(L, ro_stale);
        lua_setfield(L, -2, stale_events[i]);
    }
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_key_stale_mt);

    lua_getfield(L, S, "protect_strings");
    lua_pushvalue(L, str);
    lua_pushboolean(L, 1);
    lua_call(L, 2, 0);
    return 0;
}

struct sandbox *sandbox_new(const char *name, const struct sandbox_limits *lim,
                            struct cs_err *err)
{
    struct sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        cs_err_set(err, "out of memory");
        return NULL;
    }
    snprintf(sb->name, sizeof sb->name, "%s", name);
    sb->lim = *lim;
    sb->limit = (size_t)-1; /* the bare sandbox is not the policy's */
    sb->hook_step = lim->instructions < SB_HOOK_STEP ? (int)lim->instructions
                                                     : SB_HOOK_STEP;
    if (sb->hook_step < 1)
        sb->hook_step = 1;
    sb->L = lua_newstate(sb_alloc, sb);
    if (!sb->L) {
        free(sb);
        cs_err_set(err, "out of memory");
        return NULL;
    }
    *(struct sandbox **)lua_getextraspace(sb->L) = sb;
    lua_pushcfunction(sb->L, sb_setup);
    if (lua_pcall(sb->L, 0, 0, 0) != LUA_OK) {
        const char *m = lua_tostring(sb->L, -1);
        cs_err_set(err, "sandbox: %s", m ? m : "error");
        sandbox_free(sb);
        return NULL;
    }
    lua_gc(sb->L, LUA_GCCOLLECT, 0);
    /* every call leaves only short-lived garbage: the generational mode
     * collects it young and cheaply */
    lua_gc(sb->L, LUA_GCGEN, 0, 0);
    if (lim->memory >= 0 && (uint64_t)lim->memory < (size_t)-1 - sb->used)
        sb->limit = sb->used + (size_t)lim->memory;
    return sb;
}

void sandbox_free(struct sandbox *sb)
{
    if (!sb)
        return;
    if (sb->L)
        lua_close(sb->L);
    free(sb);
}

lua_State *sandbox_lua(struct sandbox *sb) { return sb->L; }
int sandbox_dead(const struct sandbox *sb) { return sb->dead; }
size_t sandbox_mem_used(const struct sandbox *sb) { return sb->used; }

/* ------------------------------------------------------- protected calls */

static void copy_message(lua_State *L, int idx, struct sandbox_msg *msg)
{
    const char *m = lua_tostring(L, idx);
    if (!m)
        m = "(error object is not a string)";
    const char *tb = strstr(m, "\nstack traceback:");
    size_t n = tb ? (size_t)(tb - m) : strlen(m);
    if (n >= sizeof msg->text)
        n = sizeof msg->text - 1;
    memcpy(msg->text, m, n);
    msg->text[n] = '\0';
    snprintf(msg->trace, sizeof msg->trace, "%s", tb ? tb + 1 : "");
}

enum sandbox_rc sandbox_pcall(struct sandbox *sb, int nargs, int nres,
                              struct sandbox_msg *msg)
{
    lua_State *L = sb->L;
    int base = lua_gettop(L) - nargs; /* the function */
    msg->text[0] = msg->trace[0] = '\0';
    if (sb->dead) {
        lua_settop(L, base - 1);
        snprintf(msg->text, sizeof msg->text, "memory limit of %lld bytes exceeded",
                 (long long)sb->lim.memory);
        return SANDBOX_ERR_MEMORY;
    }
    lua_pushcfunction(L, sb_traceback);
    lua_insert(L, base);
    sb->instr_used = 0;
    sb->instr_hit = 0;
    sb->mem_hit = 0;
    sb->mem_pending = 0;
    sb->logs = 0;
    sb->bytes = 0;
    sb->wall_hit = 0;
    sb->decoding = sb->decode_over = 0;
    sb->deadline = 0; /* set by the first hook */
    sb->running = 1;
    lua_sethook(L, sb_hook, LUA_MASKCOUNT, sb->hook_step);
    int st = lua_pcall(L, nargs, nres, base);
    lua_sethook(L, NULL, 0, 0);
    sb->running = 0;
    sb->has_now = 0;

    enum sandbox_rc rc = SANDBOX_OK;
    if (st != LUA_OK)
        copy_message(L, -1, msg);
    if (sb->mem_hit || st == LUA_ERRMEM) {
        /* whatever Lua returned: the policy may have caught the error */
        sb->dead = 1;
        rc = SANDBOX_ERR_MEMORY;
        snprintf(msg->text, sizeof msg->text, "memory limit of %lld bytes exceeded",
                 (long long)sb->lim.memory);
    } else if (sb->instr_hit) {
        rc = SANDBOX_ERR_INSTRUCTIONS;
        if (st == LUA_OK || !strstr(msg->text, "instruction limit"))
            snprintf(msg->text, sizeof msg->text, sb->wall_hit
                     ? "instruction limit: still running after %lld ms"
                     : "instruction limit of %lld exceeded",
                     sb->wall_hit ? (long long)SB_WALL_MS
                                  : (long long)sb->lim.instructions);
    } else if (st != LUA_OK) {
        rc = SANDBOX_ERR_RUNTIME;
    }
    if (rc == SANDBOX_OK)
        lua_remove(L, base); /* the handler, below the results */
    else
        lua_settop(L, base - 1);
    sb->mem_hit = 0;
    sb->mem_pending = 0;
    sb->instr_hit = 0;
    sb->instr_used = 0;
    return rc;
}

/* ------------------------------------------------------------ load check */

struct sb_load_args {
    const char *name;
    const char *src;
    size_t len;
};

static int last_line(const char *src, size_t len)
{
    int line = 1, last = 1;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\n') {
            line++;
        } else if (src[i] != ' ' && src[i] != '\t' && src[i] != '\r') {
            last = line;
        }
    }
    return last;
}

static int sb_load(lua_State *L)
{
    const struct sb_load_args *a = lua_touserdata(L, 1);
    const char *chunk = lua_pushfstring(L, "@%s", a->name);
    if (luaL_loadbufferx(L, a->src, a->len, chunk, "t") != LUA_OK)
        return lua_error(L);
    int f = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_new_env);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_lib);
    lua_call(L, 1, 1);
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    lua_setupvalue(L, f, 1);
    lua_pushvalue(L, f);
    lua_call(L, 0, 1);
    int result = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_lock);
    lua_pushvalue(L, env);
    lua_call(L, 1, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_check);
    lua_pushvalue(L, result);
    lua_pushstring(L, a->name);
    lua_pushinteger(L, last_line(a->src, a->len));
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_getinfo);
    lua_call(L, 4, 2);
    if (lua_isnil(L, -2))
        return lua_error(L); /* "file:line: message" */
    lua_pop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_key_hooks);
    return 0;
}

/* Pushes the loaded policy's plain settings schema and returns 1, or
 * pushes nothing and returns 0 when it declares none. */
static int push_schema(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_hooks);
    if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_getfield(L, -1, "settings") != LUA_TTABLE) {
        lua_pop(L, 2);
        return 0;
    }
    lua_remove(L, -2);
    return 1;
}

void sandbox_settings_defaults(lua_State *L)
{
    int t = lua_gettop(L);
    if (lua_type(L, t) != LUA_TTABLE || !push_schema(L))
        return;
    int schema = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_defaults);
    lua_pushvalue(L, schema);
    lua_pushvalue(L, t);
    lua_call(L, 2, 0);
    lua_settop(L, t);
}

struct sb_validate_args {
    const char *json;
    size_t len;
    char *why;
    size_t whylen;
    int bad;
};

static int sb_validate(lua_State *L)
{
    struct sb_validate_args *a = lua_touserdata(L, 1);
    if (!push_schema(L))
        return 0; /* no schema: any settings object, as given */
    int schema = lua_gettop(L);
    sandbox_push_json(L, a->json, a->len);
    int v = lua_gettop(L);
    if (lua_isnil(L, v)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_validate);
    lua_pushvalue(L, schema);
    lua_pushvalue(L, v);
    lua_call(L, 2, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
        snprintf(a->why, a->whylen, "%s", lua_tostring(L, -1));
        a->bad = 1;
    }
    return 0;
}

int sandbox_validate_settings(struct sandbox *sb, const char *json, size_t len, char *why,
                              size_t whylen)
{
    struct sb_validate_args a = {json, len, why, whylen, 0};
    struct sandbox_msg msg;
    lua_pushcfunction(sb->L, sb_validate);
    lua_pushlightuserdata(sb->L, &a);
    if (sandbox_pcall(sb, 1, 0, &msg) != SANDBOX_OK) {
        snprintf(why, whylen, "settings could not be checked: %s", msg.text);
        return -1;
    }
    return a.bad;
}

struct sb_lint_args {
    const char *name, *src;
    size_t len;
    void (*found)(const char *msg, void *ud);
    void *ud;
};

static int sb_lint(lua_State *L)
{
    const struct sb_lint_args *a = lua_touserdata(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_lint);
    lua_pushlstring(L, a->src, a->len);
    lua_pushstring(L, a->name);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_key_calsync_keys);
    lua_call(L, 3, 1);
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *m = lua_tostring(L, -1);
        if (m)
            a->found(m, a->ud);
        lua_pop(L, 1);
    }
    return 0;
}

enum sandbox_rc sandbox_lint(struct sandbox *sb, const char *name, const char *src,
                             size_t len, void (*found)(const char *msg, void *ud),
                             void *ud, struct sandbox_msg *msg)
{
    struct sb_lint_args a = {name, src, len, found, ud};
    lua_pushcfunction(sb->L, sb_lint);
    lua_pushlightuserdata(sb->L, &a);
    return sandbox_pcall(sb, 1, 0, msg);
}

/* 1 when msg starts with "name:" or Lua's shortened "...tail-of-name:". */
static int has_location(const char *msg, const char *name)
{
    size_t nl = strlen(name);
    if (strncmp(msg, name, nl) == 0 && msg[nl] == ':')
        return 1;
    if (strncmp(msg, "...", 3) != 0)
        return 0;
    const char *colon = strchr(msg + 3, ':');
    if (!colon)
        return 0;
    size_t tl = (size_t)(colon - (msg + 3));
    return tl <= nl && strncmp(name + nl - tl, msg + 3, tl) == 0;
}

enum sandbox_rc sandbox_load(struct sandbox *sb, const char *name,
                             const char *src, size_t len,
                             struct sandbox_msg *msg)
{
    struct sb_load_args a = {name, src, len};
    lua_pushcfunction(sb->L, sb_load);
    lua_pushlightuserdata(sb->L, &a);
    enum sandbox_rc rc = sandbox_pcall(sb, 1, 0, msg);
    if (rc == SANDBOX_OK) {
        sb->loaded = 1;
        return rc;
    }
    /* every load error reads "file:line: message" */
    if (!has_location(msg->text, name)) {
        char tmp[sizeof msg->text];
        snprintf(tmp, sizeof tmp, "%s", msg->text);
        snprintf(msg->text, sizeof msg->text, "%.200s:%d: %.290s", name,
                 last_line(src, len), tmp);
    }
    return rc;
}
