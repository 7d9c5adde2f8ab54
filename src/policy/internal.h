/* internal.h -- what the files of src/policy/ share; nothing outside
 * src/policy/ includes it (the rest of calsync uses policy/policy.h).
 *
 *   engine.c   versions, reading and compiling files, the registry of live
 *              versions and its reloads (pol_version_*, pol_file_*,
 *              pol_compile_*, pol_eng_*)
 *   args.c     the argument skeleton and its read-only proxies (pol_args_*)
 *   decide.c   dispatch, the protected call, decision validation, the
 *              fallback to flag, and the per-thread runners
 *              (pol_decide_with, policy_runner_*, policy_decide)
 *   cli.c      `calsync policy check` and `calsync policy test`
 *   sandbox.c  one capped lua_State (sandbox.h)
 *   tz.c       IANA zones from TZif files for calsync.localtime (tz.h)
 *   reload.c   the inotify watcher, the reload worker, bounded calls
 *              (reload.h)
 */
#ifndef CALSYNC_POLICY_INTERNAL_H
#define CALSYNC_POLICY_INTERNAL_H

#include "config.h"
#include "policy/policy.h"
#include "policy/sandbox.h"
#include "util.h"

#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define POLICY_NAME_MAX 63
#define POLICY_SRC_MAX (1 << 20)

/* ------------------------------------------------------------- versions */

/* One compiled-and-checked source. Immutable once published,
 * reference-counted (atomic), so a runner keeps using the version it holds
 * while the engine swaps in a new one. */
struct policy_version {
    atomic_int refs;
    char name[POLICY_NAME_MAX + 1];
    char version[16];
    char *path; /* "<name>.lua" (relative to the policies directory, so
                 * no message, flag reason or webhook shows where the
                 * server keeps its files); the file given to the CLI */
    char *src;
    size_t len;
    int64_t loaded_ms;
    /* The state the reload compiled and checked this source in, kept
     * while the version is live: policy_settings_validate (engine.c)
     * checks a calendar's settings in it instead of compiling the policy
     * again. One caller at a time (check_mu; the only mutable part of a
     * version). NULL when none was handed over, after a memory-cap hit
     * (rebuilt on the next check) and once retired (no longer live: freed,
     * never rebuilt, so the history keeps sources, not states). */
    pthread_mutex_t check_mu;
    struct sandbox *check;
    int retired;
    /* 1 once the engine wrote the source to policy_sources itself (on
     * its own connection, committed): apply.c then need not, per
     * decision (policy_source_stored) */
    atomic_int source_stored;
};

/* A new version holding one reference. src is taken (freed with the
 * version) on success only; NULL on OOM (src is then still the caller's). */
struct policy_version *pol_version_new(const char *name, const char *path,
                                       char *src, size_t len, const char *hash);
/* NULL-tolerant; ref returns v. */
struct policy_version *pol_version_ref(struct policy_version *v);
void pol_version_unref(struct policy_version *v);

/* ---------------------------------------------------------- files, names */

/* 1 when s[0..n) is a policy name: [A-Za-z0-9_-]{1,63}. */
int pol_valid_name(const char *s, size_t n);

/* Reads a whole file (at most POLICY_SRC_MAX bytes). 0 with *out (owned by
 * the caller, NUL-terminated) or -1 with err. For files the operator names
 * on the command line: may block. */
int pol_file_read(const char *path, char **out, size_t *len, struct cs_err *err);

/* Reads a policy file without ever blocking (a FIFO is refused) and only
 * if it is a regular file of at most POLICY_SRC_MAX bytes; messages name
 * the file as `shown`. 0 with *out (owned by the caller, NUL-terminated),
 * or -1 with err. */
int pol_file_read_policy(const char *path, const char *shown, char **out,
                         size_t *len, struct cs_err *err);

/* The policy names (file names without ".lua") of dir, sorted. The count
 * (>= 0) with *out owned by the caller (free each and the array), or -1
 * with err. Files whose name is not a policy name go to `bad` (may be
 * NULL). */
int pol_file_scan_dir(const char *dir, char ***out, struct cs_err *err,
                      void (*bad)(const char *file, void *ud), void *ud);

struct sandbox_limits pol_limits_of(const struct config *cfg);

/* Compiles and checks src in a fresh sandbox under cfg's limits. 0 good,
 * 1 bad (msg set), -1 when no sandbox could be built (msg set). */
int pol_compile_check(const struct config *cfg, const char *name,
                      const char *path, const char *src, size_t len,
                      struct sandbox_msg *msg);

/* ---------------------------------------------------- engine, for runners */

/* Bumped whenever a live version changes. */
unsigned pol_eng_gen(void);
/* Around a run of pol_eng_live_locked() calls (one mutex section). */
void pol_eng_lock(void);
void pol_eng_unlock(void);
/* The live version of `name` or NULL; not referenced: the caller holds
 * the engine lock and takes a reference before unlocking. */
struct policy_version *pol_eng_live_locked(const char *name);

/* How many times policy_settings_validate compiled a policy because the
 * version had no compiled state to check in (tests: the common case is
 * none). */
unsigned pol_eng_check_builds(void);

/* ------------------------------------------------------------ arguments */

/* Pushes change, booking, ctx for `in`, refilling the state's skeleton
 * (built on the first call; its memory belongs to the state). The previous
 * call's proxies are retired first. Runs inside a protected call (may
 * raise). `in` must stay valid until pol_args_release(). */
void pol_args_push(lua_State *L, const struct policy_input *in);
/* After a call, on every path: the state must not keep the caller's input.
 * No allocation, cannot raise. */
void pol_args_release(lua_State *L);

/* ------------------------------------------------------------- decisions */

/* A sandbox with `v` loaded, in *sbp (built when NULL or dead; the caller
 * owns it and frees it with sandbox_free). Decides `in` with it: the one
 * path of live decisions and dry runs. Always fills *out. */
void pol_decide_with(const struct config *cfg, struct policy_version *v,
                     struct sandbox **sbp, const struct policy_input *in,
                     struct policy_decision *out);

/* ------------------------------------------------------ the commands */

/* Loads the candidate of `policy test`/`policy replay` (cmd, for
 * messages): a file path (has a '/' or ends in .lua) or a policy name in
 * cfg->policies; compiled and checked as a reload would. 0 with *out (one
 * reference), 1 (the file is bad: said on stderr) or 2 (usage). */
int pol_load_candidate(const struct config *cfg, const char *policy, const char *cmd,
                       struct policy_version **out);

/* A CHANGE.json document (`policy test`'s, and the recorded inputs a
 * replay reads) parsed and checked into a policy_input: NULL with err on a
 * malformed one. L is a JSON state (json_state()). Free with
 * pol_change_free. */
struct pol_change;
struct pol_change *pol_change_parse(lua_State *L, const char *text, size_t len,
                                    struct cs_err *err);
const struct policy_input *pol_change_input(const struct pol_change *c);
void pol_change_free(struct pol_change *c);

/* 1: forced flags of this thread are not logged (policy check prints
 * them); 0 again after. */
void pol_decide_quiet(int on);

#endif
