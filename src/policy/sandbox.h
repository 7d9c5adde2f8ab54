/* sandbox.h -- one capped, sandboxed lua_State for one policy (DESIGN §5).
 *
 * A sandbox is a lua_State whose globals are the full standard library,
 * used only by trusted code: the bundled lua/calsync/sandbox.lua builds
 * the policy's environment from an allowlist, and policy code only ever
 * sees that environment, whose C functions are all bounded before they
 * run (docs/internals/policy.md, "C work"). Around it, in C: a lua_Alloc
 * with a byte cap, an instruction-count hook that pcall cannot swallow, a
 * wall-clock backstop in that hook, a traceback message handler that
 * names the policy's line.
 *
 * Not thread-safe: one sandbox belongs to one thread at a time.
 */
#ifndef CALSYNC_SANDBOX_H
#define CALSYNC_SANDBOX_H

#include "util.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

struct sandbox;

/* Outcome of a protected call, mapped to a decision by decide.c. */
enum sandbox_rc {
    SANDBOX_OK = 0,
    SANDBOX_ERR_RUNTIME,      /* a Lua error (message in msg) */
    SANDBOX_ERR_INSTRUCTIONS, /* the instruction budget ran out */
    SANDBOX_ERR_MEMORY,       /* the byte cap was hit: the state is dead */
};

struct sandbox_limits {
    int64_t instructions; /* per protected call (load included) */
    int64_t memory;       /* bytes the policy may use on top of the
                           * sandbox's own baseline */
};

/* Message of a failed protected call. */
struct sandbox_msg {
    char text[512];   /* first line: "file:line: message" */
    char trace[2048]; /* stack traceback, may be empty */
};

/* Builds a sandbox for the policy `name` (used in log lines). Returns
 * NULL with err set on OOM or if the bundled Lua fails to run. The
 * caller owns the result; release with sandbox_free(). */
struct sandbox *sandbox_new(const char *name, const struct sandbox_limits *lim,
                            struct cs_err *err);
void sandbox_free(struct sandbox *sb);

/* The state, for pushing the function and arguments of sandbox_pcall. */
lua_State *sandbox_lua(struct sandbox *sb);

/* 1 once a call hit the memory cap: the state must be freed and rebuilt. */
int sandbox_dead(const struct sandbox *sb);

/* Bytes the state uses now (tests, metrics). */
size_t sandbox_mem_used(const struct sandbox *sb);

/* Compiles src (text only) as chunk "@<name>" in a fresh environment, runs
 * it under the limits, locks the environment and checks the returned table
 * (S.check): on success its hooks are kept in the registry for
 * sandbox_push_hook(). On failure msg->text holds "file:line: message"
 * (name is the file as shown). Call at most once per sandbox. */
enum sandbox_rc sandbox_load(struct sandbox *sb, const char *name,
                             const char *src, size_t len,
                             struct sandbox_msg *msg);

/* What `policy check` finds in the text of a policy (S.lint in
 * lua/calsync/sandbox.lua: unknown calsync.NAME, a literal decision
 * without a reason): found(msg, ud) per finding, "file:line: message", in
 * source order. Runs under the limits like a call; no policy code runs. */
enum sandbox_rc sandbox_lint(struct sandbox *sb, const char *name, const char *src,
                             size_t len, void (*found)(const char *msg, void *ud),
                             void *ud, struct sandbox_msg *msg);

/* Checks a calendar's settings (JSON text; an object) against the loaded
 * policy's `settings` schema (S.validate_settings). 0 when they pass (or
 * the policy declares no schema), 1 with why = "settings.key: message",
 * -1 when the check itself failed (why says so). */
int sandbox_validate_settings(struct sandbox *sb, const char *json, size_t len, char *why,
                              size_t whylen);

/* Calls the function under nargs arguments at the top of the stack with
 * the limits armed and the traceback handler. On SANDBOX_OK nres results
 * replace function and arguments; on any error they are popped and msg is
 * filled. Limits are sticky: a policy's own pcall cannot swallow them,
 * whatever Lua returns the flags decide. The hook is off again and the
 * per-call counters cleared on every exit. */
enum sandbox_rc sandbox_pcall(struct sandbox *sb, int nargs, int nres,
                              struct sandbox_msg *msg);

/* ---- helpers for C functions running inside sandbox_pcall (they may
 * raise Lua errors, which the protected call catches) ---- */

/* Pushes the hook `name` of the loaded policy and returns 1, or pushes
 * nothing and returns 0 when the policy has no such hook. */
int sandbox_push_hook(lua_State *L, const char *name);
/* Replaces the table at the top with a deep read-only proxy of it. */
void sandbox_readonly(lua_State *L);
/* Fast shallow read-only proxies (reads need no function call; they
 * behave as sandbox_readonly's for the policy). The target is a table
 * whose nested tables are proxies already; it never reaches policy code.
 * A metatable serves every proxy of one target, so a caller may keep
 * target and metatable across calls and hand out a new proxy per call.
 * Their memory belongs to the state. */
/* Pushes a new proxy metatable for the table at `target`. */
void sandbox_proxy_mt(lua_State *L, int target);
/* Pushes a new empty proxy whose metatable is the one at `mt`. */
void sandbox_proxy(lua_State *L, int mt);
/* Retires the proxies t[first..last] of the table at t and sets those
 * slots to nil (other values are skipped): from now on every use of one
 * (read, write, #, pairs) raises "argument of an earlier call". */
void sandbox_proxy_retire(lua_State *L, int t, int first, int last);
/* A target may compute fields on first read: its own metatable's __index
 * (a function, called with the target and the key, which the policy cannot
 * reach) raw-sets what it makes, so it runs once per field; pairs on the
 * proxy first reads every key of the metatable's __lazykeys array. */
/* Starts a decision (DESIGN §5, decisions are deterministic): until the
 * protected call returns, os.time() and os.date() without a time answer
 * now_s (ctx.now), and math.random restarts from the seed
 * (sandbox_seed_of(seed_text), now_s) -- seed_text is the booking's uid,
 * so a replay with the same inputs draws the same numbers. */
void sandbox_begin_decision(lua_State *L, int64_t now_s, const char *seed_text);
/* FNV-1a (64 bits) of text (NULL: ""), the first half of the seed. */
uint64_t sandbox_seed_of(const char *text);
/* Inside a call: fills the loaded policy's setting defaults into the
 * settings table at the top (before it is made read-only). Nothing when
 * the policy declares no schema. */
void sandbox_settings_defaults(lua_State *L);
/* Decodes JSON text with cjson (JSON null becomes nil) and pushes it. */
void sandbox_push_json(lua_State *L, const char *text, size_t len);
/* Pushes the log function (ctx.log, print): one log line per call, at most
 * SANDBOX_MAX_LOG_LINES per protected call. */
void sandbox_push_log(lua_State *L);

#define SANDBOX_MAX_LOG_LINES 100

#endif
