/* policy.h -- the Lua policy engine (DESIGN §5).
 *
 * This header is the boundary the rest of calsync uses. The engine keeps
 * one live version per policy file of the configured directory and
 * reloads on inotify, SIGHUP and POST /v1/policies/reload. Sync workers
 * ask for decisions through a struct policy_runner of their own.
 *
 * A policy file that is removed from disk keeps its live version until the
 * service restarts (existing calendars keep deciding); it is listed with
 * "removed":true and is no longer offered to new calendars
 * (policy_is_live() is 0). See docs/internals/policy.md.
 */
#ifndef CALSYNC_POLICY_H
#define CALSYNC_POLICY_H

#include "booking.h"
#include "config.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

/* Loads every policy of cfg->policies and starts watching the directory.
 * A missing directory or a bad file is not fatal (it is reported in
 * GET /v1/policies and the log). Returns 0, or -1 with err set on a
 * resource failure. cfg must outlive the engine. */
int policy_engine_start(const struct config *cfg, struct cs_err *err);
/* Stops the watcher and forgets every policy. Runners still alive keep the
 * versions they hold (reference-counted) but get -1 from policy_decide. */
void policy_engine_stop(void);

/* Re-reads the directory now, on the reload worker, and waits for it at
 * most POLICY_RELOAD_WAIT_MS (engine.c). Returns the number of files whose
 * last load failed (their previous versions stay live), a file still
 * loading when the wait ended counted among them; when errors is not
 * NULL a JSON array of {"name","error"} is appended to it. -1 on a
 * resource failure. Not concurrently with policy_engine_stop(). */
int policy_reload(struct buf *errors);

/* Asks the reload worker for a reload and returns at once (SIGHUP,
 * inotify): the outcome is logged and shown by GET /v1/policies. */
void policy_reload_request(void);

/* Tests: the per-file load timeout (0 or less: the default). */
void policy_set_load_timeout_ms(int ms);

/* Checks a calendar's settings (JSON object text) against the `settings`
 * schema of the live version of `name` (DESIGN §5): 0 when they pass or
 * the policy declares no schema; 1 with why = "settings.key: message"
 * (the API answers 422); -1 when no live version or no sandbox could be
 * had (why says so). Builds a sandbox for the check: for the API's
 * calendar writes, not for every decision. Thread-safe. */
int policy_settings_validate(const char *name, const char *settings_json, char *why,
                             size_t whylen);

/* Appends {"policies":[{"name","version","loaded_at","error"?,
 * "removed"?}]} sorted by name; version and loaded_at are null until a
 * version loads. 0, or -1 on OOM (out then holds a partial document). */
int policy_list_json(struct buf *out);

/* 1 when `name` has a live version and its file is still on disk (what a
 * new calendar may select). */
int policy_is_live(const char *name);

/* 1 unless some policy file on disk has never had a good version (for
 * /healthz: a failed reload of a file whose previous version is live keeps
 * it 1). */
int policy_all_live(void);

/* ------------------------------------------------------------ decisions */

/* A time left out (dry runs only): the field is nil for the policy. */
#define POLICY_TIME_NONE INT64_MIN

/* One classified change, as the worker hands it to the policy. Nothing is
 * owned: every pointer must stay valid for the duration of policy_decide().
 * Strings are NUL-terminated; a NULL string is nil for the policy. Times are
 * ms since the epoch (UTC) and reach Lua as RFC 3339 UTC strings. */
struct policy_input {
    const char *kind;        /* delete | time_change | title_change | response */
    const char *event_json;  /* the event as Google sent it (JSON text);
                              * for a full-resync deletion the stub
                              * {"id":..,"status":"cancelled"}; NULL: nil */
    size_t event_len;
    int64_t old_start_ms, old_end_ms; /* the booking before the change */
    const char *old_title;
    int no_old;              /* 1: change.old is nil (dry runs only) */
    int has_new;             /* 0 on delete: change.new is nil */
    int64_t new_start_ms, new_end_ms;
    const char *new_title;
    const char *new_attendees; /* change.new.attendees: JSON array of
                                * {email, response}; NULL: nil */
    int is_instance;         /* an occurrence of a recurring event */
    const char *series_id;
    int64_t original_start_ms;
    int past;
    const char *source;      /* push | poll | full_sync */
    const struct booking *booking; /* NULL: booking_json is used */
    const char *booking_json;      /* used when booking is NULL (dry runs);
                                    * both NULL: booking is nil */
    size_t booking_len;
    const char *booking_uid;       /* dry runs: the booking's uid (live:
                                    * booking->uid); seeds math.random */
    int64_t now_ms;          /* ctx.now = now_ms / 1000 (integer seconds) */
    int64_t calendar_id;     /* ctx.calendar = {id = calendar_id} */
    const char *settings_json; /* the calendar's settings object; NULL: {} */
};

/* A validated decision, always one of the five actions. */
struct policy_decision {
    char action[16];   /* cancel | reschedule | update | ignore | flag */
    char reason[1024]; /* the policy's reason, or the runtime's */
    char policy[64];   /* the policy's name ... */
    char version[16];  /* ... and the version that decided (audit) */
    int forced;        /* 1: the runtime turned an error, a limit hit or an
                        * invalid decision into flag */
    char error[16];    /* when forced: runtime | instructions | memory |
                        * decision | load (calsync_policy_errors_total's
                        * kind); "" otherwise */
};

/* Appends `in` as the CHANGE.json document `calsync policy test` and
 * `policy replay` read (DESIGN §2 "Replayable decisions"): the fields the
 * policy's arguments hold, from the same struct (policy/args.c), with
 * ctx.now in whole seconds and `past` as given. The booking is written
 * from in->booking, else in->booking_json as it is. 0, or -1 on OOM (out
 * then holds a partial document). */
int policy_input_json(const struct policy_input *in, struct buf *out);

/* Longest reason a policy may return, in bytes. */
#define POLICY_REASON_MAX 1000

/* Outcomes of one call, mapped to a decision in one place
 * (policy_fallback in decide.c); `kind` label of
 * calsync_policy_errors_total. */
enum policy_rc {
    POLICY_OK = 0,
    POLICY_ERR_RUNTIME,      /* "runtime": the hook raised an error */
    POLICY_ERR_INSTRUCTIONS, /* "instructions": policy_limits.instructions */
    POLICY_ERR_MEMORY,       /* "memory": policy_limits.memory */
    POLICY_ERR_DECISION,     /* "decision": not {action=..., reason=...} */
    POLICY_ERR_LOAD,         /* "load": the live version failed to load in
                              * this worker's state */
};

struct policy_runner;

/* One per worker thread: owns that thread's lua_States (one per policy it
 * has used), rebuilt when a new version goes live (generation counter) or
 * after a state hit the memory cap. cfg (limits) must outlive the runner.
 * Returns NULL on OOM. Use from one thread at a time. */
struct policy_runner *policy_runner_new(const struct config *cfg);
/* Frees the states and drops the versions held. NULL is allowed. */
void policy_runner_free(struct policy_runner *r);

/* Asks the live version of `policy_name` for a decision on `in`.
 * Dispatch (DESIGN §5): in->past -> on_past; else an occurrence ->
 * on_instance when the policy has it; else the kind's hook; a missing hook
 * -> ignore, reason "no hook". The decision is validated; an error, a
 * limit hit or an invalid decision becomes flag with the reason
 * (out->forced = 1, counted in calsync_policy_errors_total{policy,kind}).
 * Every decision is counted in calsync_policy_decisions_total
 * {policy,action}. Returns 0 when *out holds a decision, which is always
 * unless the policy has no live version: then -1, and *out is a flag
 * naming the problem (the caller decides whether to use it). */
int policy_decide(struct policy_runner *r, const char *policy_name,
                  const struct policy_input *in, struct policy_decision *out);

/* As policy_decide, for a calendar's shadow policy (DESIGN §5): the same
 * call, but the decision is not counted in calsync_policy_decisions_total
 * (it is not applied; apply.c counts it against the live decision in
 * calsync_policy_shadow_decisions_total). */
int policy_decide_shadow(struct policy_runner *r, const char *policy_name,
                         const struct policy_input *in, struct policy_decision *out);

/* A copy of the source of version `version` of policy `name`, if that
 * version was live at any time since the engine started (the engine keeps
 * every version it published, so a decision's source can be recorded
 * after a reload replaced it): 1 with *src (owned by the caller, free())
 * and *len, 0 when unknown, -1 on OOM. Thread-safe. */
int policy_source_copy(const char *name, const char *version, char **src, size_t *len);

/* 1 when the engine itself wrote the source of version `version` of
 * policy `name` to the store (policy_sources) when it went live, so a
 * decision of it need not write it again; 0 when it did not (no store, a
 * failed write, a late publish) or the version is unknown. Thread-safe. */
int policy_source_stored(const char *name, const char *version);

/* `calsync policy replay [--since WHEN] [--calendar ID] [--json] CANDIDATE`
 * (DESIGN §3): re-decides the recorded decisions under CANDIDATE (a file
 * or a policy name) from their recorded inputs and reports those whose
 * action differs. Only reads the database. The exit status. */
int policy_cmd_replay(const struct config *cfg, const char *candidate, const char *since,
                      const char *calendar, int json);

/* The version of a source: the first 12 hex digits of its SHA-256, into
 * out (at least 13 bytes). 0, or -1 if libcrypto fails. */
int policy_version_of(const char *src, size_t len, char out[13]);

/* `calsync policy check [DIR|FILE]` and `calsync policy test [--expect
 * ACTION] POLICY CHANGE.json`: return the process exit status (0, 1, or 2
 * for usage). policy test exits 1 when the runtime forced the decision (a
 * policy error, a limit hit, an invalid decision) or, with expect (may be
 * NULL), when the action is not expect. */
int policy_cmd_check(const struct config *cfg, const char *target);
int policy_cmd_test(const struct config *cfg, const char *policy,
                    const char *change_file, const char *expect);

#endif
